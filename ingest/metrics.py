"""Prometheus metrics of the ingest role, labelled by source (e.g. `binance`, `chain:1`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MESSAGES_RECEIVED = Counter(
    "sigflow_ingest_messages_received_total",
    "Raw messages read from a source (WebSocket frames, RPC results, file rows).",
    ["source"],
)
EVENTS_PUBLISHED = Counter(
    "sigflow_ingest_events_published_total",
    "Records handed to the Kafka producer, by source and topic.",
    ["source", "topic"],
)
UNKNOWN_MESSAGES = Counter(
    "sigflow_ingest_unknown_messages_total",
    "Well-formed messages of a kind the adapter does not handle (counted and skipped).",
    ["source"],
)
DEAD_LETTERS = Counter(
    "sigflow_ingest_dead_letters_total",
    "Inputs sent to the dead-letter topic, by source and error kind.",
    ["source", "kind"],
)
RECONNECTS = Counter(
    "sigflow_ingest_reconnects_total",
    "Connections to a source re-opened after a failure or a silent period.",
    ["source"],
)
GAPS = Counter(
    "sigflow_ingest_gaps_total",
    "Gaps found: `sequence` (missing trade ids, backfilled) or `outage` (recorded window).",
    ["source", "kind"],
)
BACKFILLED = Counter(
    "sigflow_ingest_backfilled_total",
    "Events recovered over REST/RPC after a gap.",
    ["source"],
)
EVENT_LAG = Histogram(
    "sigflow_ingest_event_lag_seconds",
    "Receive time minus event time of published events.",
    ["source"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PRODUCER_PENDING = Gauge(
    "sigflow_ingest_producer_pending",
    "Records queued for Kafka and not yet acknowledged (bounded by ingest_max_pending).",
)

# Chain feed
REORGS = Counter(
    "sigflow_ingest_reorgs_total",
    "Chain reorganizations seen (orphaned blocks retracted), by source `chain:<id>`.",
    ["source"],
)
REORGED_BLOCKS = Counter(
    "sigflow_ingest_reorged_blocks_total",
    "Blocks orphaned by reorganizations (the sum of their depths).",
    ["source"],
)
BLOCKS_BEHIND = Gauge(
    "sigflow_ingest_blocks_behind_head",
    "The node's head minus the newest block the chain feed has published.",
    ["source"],
)
