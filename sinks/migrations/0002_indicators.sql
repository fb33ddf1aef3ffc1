-- Indicators in long form: one row per (candle, indicator name), so a new indicator
-- is a new name, not a schema change. ReplacingMergeTree on the natural key.
CREATE TABLE IF NOT EXISTS {db}.indicators
(
    exchange     LowCardinality(String),
    symbol       LowCardinality(String),
    interval     LowCardinality(String),
    open_time    DateTime64(3, 'UTC'),
    name         LowCardinality(String),
    value        Float64,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(open_time)
ORDER BY (exchange, symbol, interval, name, open_time)
SETTINGS non_replicated_deduplication_window = 1000;
