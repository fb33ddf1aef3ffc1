"""The health server: paths, status codes and the readiness cache."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import httpx

from sigflow.dependencies import Dependency, dependency
from sigflow.health_server import HealthServer, Readiness
from sigflow.settings import Settings


def kafka_at(address: str) -> Dependency:
    return dependency(Settings(kafka_bootstrap=address), "kafka")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_readyz_is_503_until_started_and_names_each_failing_check() -> None:
    down = kafka_at(f"127.0.0.1:{closed_port()}")
    server = HealthServer("sink", Readiness([down], cache_seconds=0))
    server.start("127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        not_ready = httpx.get(f"{base}/readyz")
        alive = httpx.get(f"{base}/healthz")
    finally:
        server.stop()
        server.stop()  # safe twice
    assert alive.status_code == 200
    assert not_ready.status_code == 503
    assert not_ready.json() == {
        "status": "not_ready",
        "role": "sink",
        "checks": {"started": False, "kafka": False},
    }


def test_readyz_turns_ready_once_started_with_dependencies_up() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        readiness = Readiness([kafka_at(f"127.0.0.1:{listener.getsockname()[1]}")], 0)
        server = HealthServer("process", readiness)
        server.start("127.0.0.1", 0)
        try:
            url = f"http://127.0.0.1:{server.port}/readyz"
            before = httpx.get(url).status_code
            readiness.mark_started()
            after = httpx.get(url)
        finally:
            server.stop()
    assert before == 503
    assert after.status_code == 200
    assert after.json()["checks"] == {"started": True, "kafka": True}


def test_dependency_checks_are_cached_between_probes() -> None:
    calls = []

    def probe(timeout: float) -> str | None:
        calls.append(timeout)
        return None

    readiness = Readiness([Dependency("clickhouse", "http://x", probe)], cache_seconds=60)
    for _ in range(5):
        assert readiness.checks()["clickhouse"] is True
    assert len(calls) == 1


def run_healthcheck(metrics_port: int, api_port: int) -> int:
    """`python -m sigflow.healthcheck` (the image's HEALTHCHECK) with these ports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGFLOW_")}
    env |= {"SIGFLOW_METRICS_PORT": str(metrics_port), "SIGFLOW_API_PORT": str(api_port)}
    return subprocess.run(
        [sys.executable, "-m", "sigflow.healthcheck"], env=env, timeout=30, check=False
    ).returncode


def test_container_healthcheck_passes_only_when_the_role_answers() -> None:
    server = HealthServer("dispatch", Readiness([], cache_seconds=0))
    server.start("127.0.0.1", 0)
    try:
        answering = run_healthcheck(server.port, closed_port())
    finally:
        server.stop()
    assert answering == 0
    assert run_healthcheck(closed_port(), closed_port()) == 1
