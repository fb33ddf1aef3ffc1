"""sigflow glue: settings, CLI, the embedded local stack, logging and metrics setup."""

from __future__ import annotations

__version__ = "0.1.0"
