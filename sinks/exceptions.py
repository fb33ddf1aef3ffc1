"""Errors of the sinks."""

from __future__ import annotations

from sigflow.exceptions import SigflowError


class SinkError(SigflowError):
    """A write to the warehouse failed; `retriable` says whether trying again may help."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.retriable = retriable


class MigrationError(SinkError):
    """A schema migration could not be applied."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retriable=False)
