-- Anomalies and alerts. ReplacingMergeTree keyed on the deterministic id (the ORDER BY
-- ends with it and its other parts come first), so a replayed or retried record
-- collapses into one row; read with FINAL. Monthly partitions by event time: "today"
-- reads the parts whose ts range covers today (min/max of the partition key is kept per
-- part), and a replay of years of history stays within the partitions-per-insert limit.
-- "Latest per subject" follows the ORDER BY. TTL counts from when sigflow wrote a row,
-- not from its event time, so a replay of old history is kept like live data.
CREATE TABLE IF NOT EXISTS {db}.anomalies
(
    anomaly_id   String,
    kind         LowCardinality(String),
    subject      LowCardinality(String),
    exchange     LowCardinality(Nullable(String)),
    symbol       LowCardinality(Nullable(String)),
    interval     LowCardinality(Nullable(String)),
    chain_id     Nullable(UInt64),
    ts           DateTime64(3, 'UTC'),
    score        Float64,
    severity     Enum8('info' = 0, 'warning' = 1, 'critical' = 2),
    observed     Float64,
    expected     Float64,
    explanation  String,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (subject, kind, ts, anomaly_id)
TTL toDateTime(inserted_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.alerts
(
    alert_id     String,
    rule         LowCardinality(String),
    source       Enum8('signal' = 1, 'anomaly' = 2),
    kind         LowCardinality(String),
    severity     Enum8('info' = 0, 'warning' = 1, 'critical' = 2),
    subject      LowCardinality(String),
    exchange     LowCardinality(Nullable(String)),
    symbol       LowCardinality(Nullable(String)),
    chain_id     Nullable(UInt64),
    ts           DateTime64(3, 'UTC'),
    title        String,
    explanation  String,
    score        Nullable(Float64),
    direction    Nullable(Int8),
    price        Nullable(Float64),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (rule, subject, ts, alert_id)
TTL toDateTime(inserted_at) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 1000;
