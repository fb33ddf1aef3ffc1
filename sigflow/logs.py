"""Structured logging: one JSON object per line, with `extra=` fields kept.

Correlation fields: `role` (bound once per process by the role's lifecycle), those a
log call passes in `extra=` (topic, partition, offset, key, ...), and `trace_id` /
`span_id` of the span running when tracing is on.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from sigflow import tracing

_STANDARD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message"}
_bound: dict[str, Any] = {}


def bind_log_fields(**fields: Any) -> None:
    """Add `fields` to every JSON line this process writes from now on (e.g. the role)."""
    _bound.update(fields)


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON: time, level, logger, message and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_bound,
        }
        if (ids := tracing.current_ids()) is not None:
            entry["trace_id"], entry["span_id"] = ids
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Send every logger to stderr in the chosen format (call once per process)."""
    handler = logging.StreamHandler(sys.stderr)
    if json:
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log every reconnect and rebalance at INFO; keep them to warnings
    # unless sigflow itself is being debugged.
    if root.level > logging.DEBUG:
        for chatty in ("aiokafka", "httpx", "faust", "mode"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
        # ...but the Faust worker's own start and stop lines are worth keeping.
        for lifecycle in ("faust.worker", "mode.worker"):
            logging.getLogger(lifecycle).setLevel(logging.INFO)
