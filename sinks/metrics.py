"""Prometheus metrics of the ClickHouse sink."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

ROWS_WRITTEN = Counter("sigflow_sink_rows_total", "Rows inserted into ClickHouse.", ["table"])
INSERT_SECONDS = Histogram(
    "sigflow_sink_insert_seconds", "Duration of one ClickHouse insert.", ["table"]
)
BATCH_ROWS = Histogram(
    "sigflow_sink_batch_rows",
    "Rows per insert.",
    ["table"],
    buckets=(1, 10, 100, 1_000, 10_000, 50_000, 100_000, 500_000),
)
FLUSH_FAILURES = Counter(
    "sigflow_sink_flush_failures_total", "Flushes that failed and were re-read from Kafka."
)
DEAD_LETTERS = Counter(
    "sigflow_sink_dead_letters_total", "Records the sink could not decode (sent to the DLQ)."
)
