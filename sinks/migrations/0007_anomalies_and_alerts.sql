-- Anomalies and alerts. ReplacingMergeTree keyed on the deterministic id (its parts lead
-- the ORDER BY), so a replayed or retried record collapses into one row; read with
-- FINAL. Daily partitions: "today" reads one partition, TTL drops whole days.
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
PARTITION BY toYYYYMMDD(ts)
ORDER BY (subject, kind, ts, anomaly_id)
TTL toDateTime(ts) + INTERVAL 180 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

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
TTL toDateTime(ts) + INTERVAL 365 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
