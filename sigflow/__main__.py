"""`python -m sigflow` runs the CLI (the demo starts roles this way)."""

from __future__ import annotations

from sigflow.cli import main

main()
