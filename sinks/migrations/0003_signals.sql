-- Trading signals: one row per rule firing on a closed candle.
CREATE TABLE IF NOT EXISTS {db}.signals
(
    exchange     LowCardinality(String),
    symbol       LowCardinality(String),
    interval     LowCardinality(String),
    open_time    DateTime64(3, 'UTC'),
    rule         LowCardinality(String),
    direction    Int8,
    strength     Float64,
    price        Float64,
    explanation  String,
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(open_time)
ORDER BY (exchange, symbol, interval, rule, open_time)
SETTINGS non_replicated_deduplication_window = 1000;
