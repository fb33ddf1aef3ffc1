-- Trades and candles. ReplacingMergeTree on the natural key: a replayed or retried
-- row collapses into one; read with FINAL (or SETTINGS final = 1) to never see a
-- version that a background merge has not folded yet.
CREATE TABLE IF NOT EXISTS {db}.trades
(
    exchange     LowCardinality(String),
    symbol       LowCardinality(String),
    trade_id     String,
    price        Float64,
    size         Float64,
    side         Enum8('buy' = 1, 'sell' = 2),
    ts           DateTime64(3, 'UTC'),
    received_ts  DateTime64(3, 'UTC'),
    inserted_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (exchange, symbol, ts, trade_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS {db}.candles
(
    exchange      LowCardinality(String),
    symbol        LowCardinality(String),
    interval      LowCardinality(String),
    open_time     DateTime64(3, 'UTC'),
    close_time    DateTime64(3, 'UTC'),
    open          Float64,
    high          Float64,
    low           Float64,
    close         Float64,
    volume        Float64,
    quote_volume  Float64,
    vwap          Float64,
    trade_count   UInt32,
    buy_volume    Float64,
    sell_volume   Float64,
    final         Bool,
    inserted_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(open_time)
ORDER BY (exchange, symbol, interval, open_time)
SETTINGS non_replicated_deduplication_window = 1000;
