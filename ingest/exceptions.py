"""Errors raised while reading trade sources: sample data, synthetic generation, files.

    IngestError                a source that cannot be read
    ├── SampleDataError        the bundled real candles cannot be fetched or parsed
    ├── InvalidCandleError     a candle the synthetic generator cannot reproduce
    └── TradeFileError         a user's trade file that cannot be read at all

A single bad row of a trade file is not an error: `ingest.files` yields it as a
`RejectedRow` so the caller can route it to the dead-letter topic and go on.
"""

from __future__ import annotations

from pathlib import Path

from sigflow.exceptions import SigflowError


class IngestError(SigflowError):
    """A trade source that cannot be read."""


def _located(reason: str, path: Path | None, line: int | None) -> str:
    """`path:line: reason`, so the message points at what to open and fix."""
    if path is None:
        return reason
    if line is None:
        return f"{path}: {reason}"
    return f"{path}:{line}: {reason}"


class SampleDataError(IngestError):
    """The bundled real candles could not be fetched, extracted or parsed."""

    def __init__(self, reason: str, *, path: Path | None = None, line: int | None = None) -> None:
        super().__init__(_located(reason, path, line))
        self.reason = reason
        self.path = path
        self.line = line


class InvalidCandleError(IngestError):
    """A candle whose OHLCV cannot be reproduced by trades (e.g. high below close)."""

    def __init__(self, reason: str, *, open_time: int) -> None:
        super().__init__(f"candle at open_time={open_time}: {reason}")
        self.reason = reason
        self.open_time = open_time


class TradeFileError(IngestError):
    """A trade file that cannot be read at all: unknown format, missing columns, I/O."""

    def __init__(self, reason: str, *, path: Path, line: int | None = None) -> None:
        super().__init__(_located(reason, path, line))
        self.reason = reason
        self.path = path
        self.line = line
