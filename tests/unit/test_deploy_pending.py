"""References the deploy files make to work merged from other branches (see
tests/deploy_contract.py). Once the code defines one, this fails: delete its entry so the
strict check covers it."""

from __future__ import annotations

from tests.deploy_contract import (
    PENDING_COMMANDS,
    PENDING_METRICS,
    PENDING_TABLES,
    metric_names_in_code,
    migration_tables,
    resolve_command,
)


def test_pending_references_are_still_pending() -> None:
    landed = [
        f"command `sigflow {' '.join(path)}`"
        for path in PENDING_COMMANDS
        if resolve_command(list(path))[1] is not None
    ]
    landed += [f"metric {name}" for name in PENDING_METRICS if name in metric_names_in_code()]
    landed += [f"table {name}" for name in PENDING_TABLES if name in migration_tables()]
    assert landed == [], "now defined in code; remove from tests/deploy_contract.py PENDING_*"
