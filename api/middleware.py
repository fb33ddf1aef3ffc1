"""Per-request plumbing as one plain ASGI middleware: request ids, access log, metrics.

Plain ASGI (not `BaseHTTPMiddleware`) because it runs on every request of the hot
`/v1/prices/latest` path and must not buffer streaming responses.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("sigflow.api.access")

REQUESTS = Counter(
    "sigflow_api_requests_total", "HTTP requests served.", ["method", "route", "status"]
)
REQUEST_SECONDS = Histogram(
    "sigflow_api_request_seconds",
    "HTTP request duration until the response ended.",
    ["method", "route", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
REQUEST_ID_HEADER = b"x-request-id"
# A caller's id is echoed into logs and headers: keep it to a short, inert token.
VALID_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def route_label(scope: Scope) -> str:
    """The route template (`/v1/candles`), the mount (`/static`), or `unmatched`:
    never the raw path, which would make one time series per URL."""
    route = scope.get("route")
    if route is not None and hasattr(route, "path"):
        return str(route.path)
    mount = scope.get("root_path", "")
    return mount or "unmatched"


def request_id(scope: Scope) -> bytes:
    """The caller's `X-Request-ID` when it is a sane token, else a new one."""
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER and VALID_REQUEST_ID.fullmatch(value):
            return bytes(value)
    return uuid.uuid4().hex.encode()


class RequestContextMiddleware:
    """Tags each HTTP request with an id (in and out), logs it as one JSON line
    (method, path, route, status, duration, request id, key id: never the key), and
    counts it by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, rid)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route, method = route_label(scope), scope["method"]
            REQUESTS.labels(method, route, status).inc()
            REQUEST_SECONDS.labels(method, route, status).observe(elapsed)
            caller = scope.get("state", {}).get("caller", "")
            log.info(
                "request",
                extra={
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                    "request_id": rid.decode(),
                    "key_id": caller[4:] if caller.startswith("key:") else None,
                },
            )
