"""The topic registry and its JSON Schema export: the document subscribers code against."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import BENCHMARKS
from schemas.export import export_json_schemas
from schemas.topics import TOPICS
from sigflow.settings import Settings, settings_env


def test_export_writes_one_schema_per_topic_with_topic_and_key(tmp_path: Path) -> None:
    written = export_json_schemas(tmp_path, prefix="acme.")
    assert sorted(p.name for p in written) == sorted(f"{name}.json" for name in TOPICS)
    trades = json.loads((tmp_path / "trades.json").read_text())
    assert trades["x-topic"] == "acme.trades"
    assert trades["x-key"] == "`exchange:symbol`"
    assert trades["type"] == "array", "a trades record holds a batch of trades"
    trade = trades["$defs"]["Trade"]
    assert trades["items"] == {"$ref": "#/$defs/Trade"}
    assert set(trade["required"]) >= {"exchange", "symbol", "trade_id", "price", "size", "ts"}
    assert trade["properties"]["symbol"]["pattern"] == "^[A-Z0-9]+-[A-Z0-9]+$"


def test_every_setting_is_documented_and_round_trips_through_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(topic_prefix="x.", candle_intervals=["1m", "5m"], api_port=9000)
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no description"
    env = settings_env(settings)
    assert env["SIGFLOW_CANDLE_INTERVALS"] == '["1m", "5m"]'
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings


def test_the_readme_configuration_table_lists_every_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(SIGFLOW_[A-Z0-9_]+)` \|", readme, flags=re.MULTILINE))
    settings = {f"SIGFLOW_{name.upper()}" for name in Settings.model_fields}
    assert sorted(settings - documented) == [], "settings missing from the README table"
    assert sorted(documented - settings) == [], "README documents settings that do not exist"


def test_every_benchmark_has_a_readme_row_and_a_section_in_the_bench_readme() -> None:
    root = Path(__file__).resolve().parents[2]
    rows = set(re.findall(r"^\| `(\w+)[` ]", (root / "README.md").read_text(), flags=re.MULTILINE))
    sections = (root / "bench" / "README.md").read_text()
    for name in BENCHMARKS:
        assert name in rows, f"sigflow bench {name} has no row in the README's table"
        assert f"`sigflow bench {name}`" in sections, f"bench/README.md never names {name}"
