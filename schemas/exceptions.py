"""Errors raised while decoding or validating events."""

from __future__ import annotations

from sigflow.exceptions import SigflowError


class SchemaError(SigflowError):
    """Input that does not match its topic's schema; `reason` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
