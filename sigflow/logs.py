"""Structured logging: one JSON object per line, with `extra=` fields kept.

Correlation fields: `role` (bound once per process by the role's lifecycle), those a
log call passes in `extra=` (topic, partition, offset, key, ...), and `trace_id` /
`span_id` of the span running when tracing is on.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
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


class RepeatFilter(logging.Filter):
    """Lets one record per logger, level and message template through every `interval`
    seconds, for the loggers under `prefix`; the next one to pass says how many it hid.

    aiokafka logs every failed reconnect, metadata refresh and fetch at ERROR: with the
    broker away, a processor wrote ~55 such lines a second, burying anything else.
    """

    def __init__(
        self, prefix: str, interval: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.prefix, self.interval, self.clock = prefix, interval, clock
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        shown, hidden = self._last.get(key, (-math.inf, 0))
        if now - shown < self.interval:
            self._last[key] = (shown, hidden + 1)
            return False
        self._last[key] = (now, 0)
        if hidden:
            record.suppressed = hidden  # an extra field in JSON lines
            record.msg = f"{record.msg} ({hidden} more like this since the last shown)"
        return True


def configure_logging(level: str = "INFO", *, json: bool = True) -> None:
    """Send every logger to stderr in the chosen format (call once per process)."""
    handler = logging.StreamHandler(sys.stderr)
    if json:
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter("aiokafka"))
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
