"""`python -m sigflow.healthcheck`: the container HEALTHCHECK, the same for every role.

Exits 0 when this container's role answers /healthz: on `SIGFLOW_METRICS_PORT` for
ingest/process/sink/dispatch, or on `SIGFLOW_API_PORT` for the API. Imports only the
settings, so a probe every few seconds stays cheap.
"""

from __future__ import annotations

import sys
import urllib.request

from sigflow.settings import load_settings

TIMEOUT_SECONDS = 3.0


def alive(port: int) -> bool:
    """True when 127.0.0.1:`port` answers GET /healthz with 200."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_SECONDS
        ) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> int:
    """0 when the role's health endpoint answers, 1 otherwise."""
    settings = load_settings()
    ports = [port for port in (settings.metrics_port, settings.api_port) if port]
    return 0 if any(alive(port) for port in ports) else 1


if __name__ == "__main__":
    sys.exit(main())
