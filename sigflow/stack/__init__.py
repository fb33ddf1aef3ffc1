"""The embedded local stack: a real broker and the ClickHouse engine on this machine."""

from __future__ import annotations

from sigflow.stack.local import LocalStack, StackStatus, adjust_for_local_stack

__all__ = ["LocalStack", "StackStatus", "adjust_for_local_stack"]
