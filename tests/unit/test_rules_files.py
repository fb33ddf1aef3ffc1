"""The four TOML file loaders share `processors.rules_files`: each reports an unreadable
or malformed file as its own error type, in one line naming the file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from processors.alerts import load_alert_rules
from processors.anomalies.rules import load_anomaly_rules
from processors.exceptions import (
    AlertRuleError,
    AnomalyRuleError,
    SignalRuleError,
    TokenPricesError,
)
from processors.pricing import load_token_prices
from processors.signals import load_rules
from sigflow.exceptions import SigflowError

LOADERS = pytest.mark.parametrize(
    ("load", "error", "what"),
    [
        (load_rules, SignalRuleError, "rules"),
        (load_alert_rules, AlertRuleError, "alert rules"),
        (load_anomaly_rules, AnomalyRuleError, "anomaly rules"),
        (load_token_prices, TokenPricesError, "token pricing"),
    ],
    ids=["signals", "alerts", "anomalies", "pricing"],
)


@LOADERS
def test_the_packaged_default_loads(
    load: Callable[[Path | None], Any], error: type[SigflowError], what: str
) -> None:
    assert load(None)


@LOADERS
def test_a_missing_file_is_the_loaders_error_naming_the_file(
    tmp_path: Path, load: Callable[[Path | None], Any], error: type[SigflowError], what: str
) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(error) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}: cannot read the {what} file: ")
    assert isinstance(raised.value.__cause__, FileNotFoundError)


@LOADERS
def test_a_file_that_is_not_utf8_is_the_loaders_error(
    tmp_path: Path, load: Callable[[Path | None], Any], error: type[SigflowError], what: str
) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"# caf\xe9\n")
    with pytest.raises(error, match=f"cannot read the {what} file"):
        load(path)


@LOADERS
def test_invalid_toml_is_the_loaders_error_naming_the_file(
    tmp_path: Path, load: Callable[[Path | None], Any], error: type[SigflowError], what: str
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[section\n", encoding="utf-8")
    with pytest.raises(error) as raised:
        load(path)
    assert str(raised.value).startswith(f"{path}: not valid TOML: ")
    assert "\n" not in str(raised.value)
