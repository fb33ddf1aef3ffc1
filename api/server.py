"""How the API is served: one uvicorn configuration for the role, tests and benchmark.

`ws="wsproto"` on purpose: uvicorn's default WebSocket implementation writes frames
without waiting for the socket to drain, so a client that stops reading would buffer
without bound in the server; wsproto's waits, which lets the per-client queue fill and
the slow client be dropped.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from starlette.types import ASGIApp


def server_config(app: ASGIApp, host: str, port: int, **tls: Any) -> uvicorn.Config:
    """uvicorn settings: uvloop + httptools, back-pressured WebSockets, our access log;
    `tls` are uvicorn's `ssl_*` options when the API serves HTTPS itself."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        **tls,
        loop="uvloop",
        http="httptools",
        ws="wsproto",
        log_config=None,
        access_log=False,  # api.middleware logs each request as JSON
        ws_ping_interval=20.0,
    )
