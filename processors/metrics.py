"""Prometheus metrics of the stream processors."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
BATCH_SECONDS = Histogram(
    "sigflow_processor_batch_seconds", "Time to process one micro-batch of trades."
)
BATCH_SIZE = Histogram(
    "sigflow_processor_batch_records",
    "Records per micro-batch.",
    buckets=(1, 10, 100, 500, 1_000, 2_000, 5_000, 10_000),
)
