"""Prometheus metrics of the stream processors."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TRADES_PROCESSED = Counter("sigflow_processor_trades_total", "Trades folded into candle state.")
CANDLES_EMITTED = Counter("sigflow_processor_candles_total", "Closed candles emitted.")
SIGNALS_EMITTED = Counter("sigflow_processor_signals_total", "Trading signals emitted.")
INDICATORS_EMITTED = Counter(
    "sigflow_processor_indicator_records_total", "Indicator records emitted (one per candle)."
)
DEAD_LETTERS = Counter("sigflow_processor_dead_letters_total", "Records sent to the DLQ.", ["kind"])
REPLAYED_SKIPPED = Counter(
    "sigflow_processor_replayed_skipped_total",
    "Records skipped because state had already folded them in (re-read after a restart).",
)
REFETCHED_RECORDS = Counter(
    "sigflow_processor_refetched_records_total",
    "Records the consumer skipped, read again from Kafka before the batch was folded in.",
    ["stream"],
)
BATCH_SECONDS = Histogram(
    "sigflow_processor_batch_seconds",
    "Time to process, publish and flush one micro-batch, per stream.",
    ["stream"],
)
BATCH_SIZE = Histogram(
    "sigflow_processor_batch_records",
    "Records per micro-batch, per stream.",
    ["stream"],
    buckets=(1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000),
)

# Anomalies, alerts and the health of the streams.
EVENTS_PROCESSED = Counter(
    "sigflow_processor_events_total",
    "Records processed per stream (trades, cross = candles by symbol, alerts = sources).",
    ["stream"],
)
TRADE_LATENESS = Histogram(
    "sigflow_processor_trade_lateness_seconds",
    "How far behind its feed's newest trade an out-of-order trade arrived (event time).",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)
TABLE_KEYS = Gauge(
    "sigflow_processor_table_keys", "Keys held in a state table on this worker.", ["table"]
)
CONSUMER_LAG = Gauge(
    "sigflow_processor_consumer_lag",
    "Records behind the partition's high watermark after the last batch.",
    ["topic", "partition"],
)
ANOMALIES_EMITTED = Counter("sigflow_processor_anomalies_total", "Anomalies emitted.", ["kind"])
ALERTS_EMITTED = Counter("sigflow_processor_alerts_total", "Alerts emitted.", ["rule"])
ALERTS_SUPPRESSED = Counter(
    "sigflow_processor_alerts_suppressed_total",
    "Alert rule matches suppressed by the rule's cool-down.",
    ["rule"],
)
CROSS_LATE_CANDLES = Counter(
    "sigflow_processor_cross_late_candles_total",
    "Candles that reached the cross-exchange stream after their window was evaluated.",
)

# On-chain anomalies.
WHALE_PRICING = Counter(
    "sigflow_processor_whale_pricing_total",
    "Transfers by pricing outcome: priced, unpriced_unmapped (token not in the pricing "
    "file), unpriced_no_price (no fresh price at its event time), retracted_unpriced, "
    "retracted_whale (a flagged transfer was later removed by a reorg).",
    ["outcome"],
)
PRICE_POINTS = Counter(
    "sigflow_processor_price_points_total",
    "Closes published to the internal asset-prices topic (before the broadcast).",
)
