"""The small HTTP server every non-API role runs on its metrics port.

    /metrics   Prometheus exposition of the process's registry
    /healthz   200 while the process is alive (Kubernetes liveness)
    /readyz    200 once the role has started and its dependencies answer, else 503
               (Kubernetes readiness); dependency checks are cached for
               `readiness_cache_seconds`, so probes never hammer Kafka or ClickHouse

It runs in a daemon thread (stdlib `ThreadingHTTPServer`), so it answers whatever the
role's event loop is doing, and works the same for Faust's loop and plain asyncio roles.
The API role serves the same three paths on its own port (api/routes/health.py).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from sigflow.dependencies import Dependency, Role, role_dependencies
from sigflow.exceptions import ConfigError
from sigflow.settings import Settings

log = logging.getLogger(__name__)

PATHS = ("/metrics", "/healthz", "/readyz")
CHECK_TIMEOUT_SECONDS = 1.0


class Readiness:
    """Whether a role is ready: it said it started, and each dependency answers (cached)."""

    def __init__(self, dependencies: list[Dependency], cache_seconds: float) -> None:
        self.dependencies = dependencies
        self.cache_seconds = cache_seconds
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._checked: dict[str, tuple[float, bool]] = {}

    def mark_started(self) -> None:
        """Called by the role once it can do its work (topics exist, consumer joined...)."""
        self._started.set()

    def checks(self) -> dict[str, bool]:
        """`started` plus one entry per dependency."""
        results = {"started": self._started.is_set()}
        with self._lock:  # one probe at a time, however many requests arrive
            now = time.monotonic()
            for needed in self.dependencies:
                checked_at, ok = self._checked.get(needed.name, (-float("inf"), False))
                if now - checked_at >= self.cache_seconds:
                    ok = needed.reachable(CHECK_TIMEOUT_SECONDS)
                    self._checked[needed.name] = (time.monotonic(), ok)
                results[needed.name] = ok
        return results


class HealthServer:
    """Serves /metrics, /healthz and /readyz for one role from a background thread."""

    def __init__(self, role: str, readiness: Readiness) -> None:
        self.role = role
        self.readiness = readiness
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def start(self, host: str, port: int) -> None:
        """Bind and serve in a daemon thread; `ConfigError` if the port cannot be bound."""
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler_class())
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc.strerror}); "
                "set SIGFLOW_METRICS_PORT to a free port"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name=f"health-{self.role}", daemon=True
        )
        self._thread.start()
        log.info("health and metrics served", extra={"role": self.role, "port": self.port})

    def stop(self) -> None:
        """Stop serving; safe to call twice or before `start()`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """Status, content type and body for a GET of `path`."""
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        if path == "/healthz":
            return _json(200, {"status": "ok", "role": self.role})
        if path == "/readyz":
            checks = self.readiness.checks()
            ready = all(checks.values())
            status = "ready" if ready else "not_ready"
            return _json(
                200 if ready else 503, {"status": status, "role": self.role, "checks": checks}
            )
        return _json(404, {"error": "not_found", "paths": list(PATHS)})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, content_type, body = server.respond(self.path.split("?", 1)[0])
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the role's own logs

        return Handler


def _json(status: int, payload: dict[str, Any]) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(payload).encode()


@contextmanager
def serve_health(settings: Settings, role: Role) -> Iterator[Readiness]:
    """Serve health and metrics for `role` while the block runs (not at all on port 0)."""
    readiness = Readiness(role_dependencies(settings, role), settings.readiness_cache_seconds)
    server = HealthServer(role, readiness)
    if settings.metrics_port:
        server.start(settings.metrics_host, settings.metrics_port)
    try:
        yield readiness
    finally:
        server.stop()
