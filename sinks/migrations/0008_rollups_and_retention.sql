-- Rollups and retention.
--
-- Rollups are refreshable materialized views, not insert-triggered ones: an insert
-- trigger sees every inserted block, so a replayed or re-sent candle would be counted
-- twice, while these recompute each touched hour/day from `candles FINAL` and so stay
-- exact under retries, crashes and replays. Every minute they recompute the hours/days
-- that received rows in the last day (found through a minmax index on `inserted_at`)
-- and append them with a newer `refreshed_at`; read them with FINAL.
--
-- Retention (TTL) counts from `inserted_at`, not event time, so replaying old history
-- keeps it for the full period. Change it with `ALTER TABLE ... MODIFY TTL`.

ALTER TABLE {db}.candles ADD INDEX IF NOT EXISTS inserted_at_minmax inserted_at TYPE minmax GRANULARITY 1;
ALTER TABLE {db}.candles MATERIALIZE INDEX inserted_at_minmax;

CREATE TABLE IF NOT EXISTS {db}.candles_1h
(
    exchange      LowCardinality(String),
    symbol        LowCardinality(String),
    open_time     DateTime64(3, 'UTC'),
    open          Float64,
    high          Float64,
    low           Float64,
    close         Float64,
    volume        Float64,
    quote_volume  Float64,
    vwap          Float64,
    trade_count   UInt64,
    buy_volume    Float64,
    sell_volume   Float64,
    minutes       UInt16,
    refreshed_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(refreshed_at)
PARTITION BY toYYYYMM(open_time)
ORDER BY (exchange, symbol, open_time);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.candles_1h_refresh
REFRESH EVERY 1 MINUTE APPEND TO {db}.candles_1h
AS SELECT
    exchange,
    symbol,
    toStartOfHour(c.open_time) AS open_time,
    argMin(c.open, c.open_time) AS open,
    max(c.high) AS high,
    min(c.low) AS low,
    argMax(c.close, c.open_time) AS close,
    sum(c.volume) AS volume,
    sum(c.quote_volume) AS quote_volume,
    sum(c.quote_volume) / sum(c.volume) AS vwap,
    sum(c.trade_count) AS trade_count,
    sum(c.buy_volume) AS buy_volume,
    sum(c.sell_volume) AS sell_volume,
    count() AS minutes,
    now64(3) AS refreshed_at
FROM {db}.candles AS c FINAL
WHERE c.interval = '1m' AND c.final
  AND (c.exchange, c.symbol, toStartOfHour(c.open_time)) IN (
      SELECT exchange, symbol, toStartOfHour(open_time) FROM {db}.candles
      WHERE interval = '1m' AND inserted_at >= now64(3) - INTERVAL 1 DAY)
GROUP BY exchange, symbol, toStartOfHour(c.open_time);

CREATE TABLE IF NOT EXISTS {db}.daily_volume
(
    day           Date,
    exchange      LowCardinality(String),
    symbol        LowCardinality(String),
    volume        Float64,
    quote_volume  Float64,
    buy_volume    Float64,
    sell_volume   Float64,
    trade_count   UInt64,
    refreshed_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(refreshed_at)
PARTITION BY toYYYYMM(day)
ORDER BY (day, exchange, symbol);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.daily_volume_refresh
REFRESH EVERY 1 MINUTE APPEND TO {db}.daily_volume
AS SELECT
    toDate(c.open_time) AS day,
    exchange,
    symbol,
    sum(c.volume) AS volume,
    sum(c.quote_volume) AS quote_volume,
    sum(c.buy_volume) AS buy_volume,
    sum(c.sell_volume) AS sell_volume,
    sum(c.trade_count) AS trade_count,
    now64(3) AS refreshed_at
FROM {db}.candles AS c FINAL
WHERE c.interval = '1m' AND c.final
  AND (c.exchange, c.symbol, toDate(c.open_time)) IN (
      SELECT exchange, symbol, toDate(open_time) FROM {db}.candles
      WHERE interval = '1m' AND inserted_at >= now64(3) - INTERVAL 1 DAY)
GROUP BY exchange, symbol, toDate(c.open_time);

ALTER TABLE {db}.trades MODIFY TTL toDateTime(inserted_at) + INTERVAL 90 DAY;
ALTER TABLE {db}.candles MODIFY TTL toDateTime(inserted_at) + INTERVAL 7 DAY DELETE WHERE interval = '1s';
ALTER TABLE {db}.indicators MODIFY TTL toDateTime(inserted_at) + INTERVAL 365 DAY
