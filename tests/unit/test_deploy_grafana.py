"""Grafana provisioning: datasources exist, dashboards use metrics the code defines and
tables the migrations create (SQL runs for real in tests/integration/test_dashboard_sql.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy_contract import (
    DEPLOY,
    EXPORTER_METRICS,
    PENDING_METRICS,
    PENDING_TABLES,
    metric_names_in_code,
    migration_tables,
)

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = yaml.safe_load(
    (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
)["datasources"]
PROMQL_FUNCTIONS = {"sum", "rate", "increase", "histogram_quantile", "by", "le", "without"}


def panels(path: Path) -> list[dict[str, Any]]:
    return list(json.loads(path.read_text())["panels"])


def targets(kind: str) -> list[dict[str, Any]]:
    return [
        target
        for path in DASHBOARDS
        for panel in panels(path)
        for target in panel["targets"]
        if target["datasource"]["type"] == kind
    ]


def test_datasources_are_prometheus_and_the_clickhouse_plugin() -> None:
    kinds = {source["uid"]: source["type"] for source in DATASOURCES}
    assert kinds == {"prometheus": "prometheus", "clickhouse": "grafana-clickhouse-datasource"}
    clickhouse = next(s for s in DATASOURCES if s["uid"] == "clickhouse")
    assert clickhouse["secureJsonData"]["password"].startswith("$")  # from the env


def test_two_dashboards_are_provisioned_from_the_mounted_folder() -> None:
    assert [p.stem for p in DASHBOARDS] == ["market-view", "pipeline-health"]
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    uids = [json.loads(p.read_text())["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_panel_uses_a_provisioned_datasource(path: Path) -> None:
    uids = {source["uid"] for source in DATASOURCES}
    for panel in panels(path):
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]


def metric_names(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_labels))
    grouped = {w for g in re.findall(r"by \(([^)]*)\)", without_labels) for w in g.split(",")}
    return words - PROMQL_FUNCTIONS - {w.strip() for w in grouped}


def test_dashboard_metrics_are_defined_by_the_code() -> None:
    used = {name for target in targets("prometheus") for name in metric_names(target["expr"])}
    assert "sigflow_sink_insert_seconds_bucket" in used  # the extraction works
    known = metric_names_in_code() | set(EXPORTER_METRICS)
    pending = {f"{name}{suffix}" for name in PENDING_METRICS for suffix in ("", "_bucket")}
    assert used - known - pending == set()


def test_pipeline_dashboard_covers_what_an_operator_watches() -> None:
    exprs = " ".join(t["expr"] for t in targets("prometheus"))
    for needed in (
        "sigflow_processor_trades_total",  # throughput
        "kafka_consumergroup_lag",  # lag
        "dead_letters_total",  # DLQ
        "reconnects_total",  # reconnects
        "sigflow_sink_insert_seconds_bucket",  # insert latency
        "sigflow_webhook_deliveries_total",  # webhook outcomes
    ):
        assert needed in exprs


def sql_tables(sql: str) -> set[str]:
    return set(re.findall(r"\b(?:FROM|JOIN)\s+sigflow\.(\w+)", sql, re.IGNORECASE))


def test_dashboard_sql_reads_tables_the_migrations_create() -> None:
    sql = [t["rawSql"] for t in targets("grafana-clickhouse-datasource")]
    market = json.loads((GRAFANA / "dashboards" / "market-view.json").read_text())
    sql += [v["query"] for v in market["templating"]["list"]]
    used = set().union(*(sql_tables(s) for s in sql))
    assert {"candles", "indicators", "signals", "anomalies"} <= used
    assert used - migration_tables() - set(PENDING_TABLES) == set()
