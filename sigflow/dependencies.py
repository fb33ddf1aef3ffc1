"""The services each role needs, how to tell they answer, and the bounded start-up wait.

Checks are deliberately cheap and blocking (a TCP connect to a Kafka bootstrap server,
ClickHouse's `/ping`): they run before a role starts its event loop, or in the health
server's thread, never in a role's event loop.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import httpx

from sigflow.exceptions import ConfigError, DependencyUnavailable
from sigflow.settings import Settings

log = logging.getLogger(__name__)

Role = Literal["ingest", "process", "sink", "dispatch", "api", "migrate"]
DependencyName = Literal["kafka", "clickhouse"]

ROLE_DEPENDENCIES: dict[Role, tuple[DependencyName, ...]] = {
    "ingest": ("kafka",),
    "process": ("kafka",),
    "sink": ("kafka", "clickhouse"),
    "dispatch": ("kafka", "clickhouse"),
    "api": ("kafka", "clickhouse"),
    "migrate": ("clickhouse",),
}

POLL_SECONDS = 0.5
_TITLES: dict[DependencyName, str] = {"kafka": "Kafka", "clickhouse": "ClickHouse"}
_SETTINGS: dict[DependencyName, str] = {"kafka": "KAFKA_BOOTSTRAP", "clickhouse": "CLICKHOUSE_URL"}


@dataclass(frozen=True)
class Dependency:
    """One service a role needs: its name, where it is, and a probe.

    `probe(timeout)` returns None when the service answers, else a short reason.
    """

    name: DependencyName
    address: str
    probe: Callable[[float], str | None]

    def reachable(self, timeout: float = 2.0) -> bool:
        """True when the service answers within `timeout` seconds."""
        return self.probe(timeout) is None


def _kafka_probe(bootstrap: str) -> Callable[[float], str | None]:
    def probe(timeout: float) -> str | None:
        reason = "no bootstrap server"
        for address in bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            try:
                with socket.create_connection((host, int(port)), timeout=timeout):
                    return None
            except OSError as exc:
                reason = exc.strerror or exc.__class__.__name__
        return reason

    return probe


def _clickhouse_probe(url: str) -> Callable[[float], str | None]:
    ping = url.rstrip("/") + "/ping"

    def probe(timeout: float) -> str | None:
        try:
            response = httpx.get(ping, timeout=timeout)
        except httpx.HTTPError as exc:
            return str(exc) or exc.__class__.__name__
        return None if response.status_code == 200 else f"/ping answered {response.status_code}"

    return probe


def dependency(settings: Settings, name: DependencyName) -> Dependency:
    """The named dependency as configured in `settings`."""
    if name == "kafka":
        return Dependency("kafka", settings.kafka_bootstrap, _kafka_probe(settings.kafka_bootstrap))
    return Dependency(
        "clickhouse", settings.clickhouse_url, _clickhouse_probe(settings.clickhouse_url)
    )


def role_dependencies(settings: Settings, role: Role) -> list[Dependency]:
    """What `role` needs before it can do any work."""
    if role not in ROLE_DEPENDENCIES:
        raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLE_DEPENDENCIES)}")
    return [dependency(settings, name) for name in ROLE_DEPENDENCIES[role]]


def wait_for_dependencies(dependencies: list[Dependency], timeout: float) -> None:
    """Return once every dependency answers; `DependencyUnavailable` after `timeout` s."""
    deadline = time.monotonic() + timeout
    for needed in dependencies:
        announced = False
        while (reason := needed.probe(min(2.0, max(0.1, deadline - time.monotonic())))) is not None:
            if time.monotonic() >= deadline:
                raise DependencyUnavailable(
                    f"cannot reach {_TITLES[needed.name]} at {needed.address} within "
                    f"{timeout:g} s ({reason}); check SIGFLOW_{_SETTINGS[needed.name]} "
                    "or raise SIGFLOW_STARTUP_TIMEOUT_SECONDS"
                )
            if not announced:
                log.warning(
                    "waiting for dependency",
                    extra={"dependency": needed.name, "address": needed.address, "reason": reason},
                )
                announced = True
            time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
        if announced:
            log.info("dependency answers", extra={"dependency": needed.name})
