"""Prometheus metrics of the webhook dispatcher."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DELIVERIES = Counter(
    "sigflow_webhook_deliveries_total",
    "Delivery attempts by outcome: delivered, retry, failed, disabled (410), deferred.",
    ["outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "sigflow_webhook_attempt_seconds",
    "Duration of one delivery attempt (request to response or error).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RETRIES_SCHEDULED = Counter(
    "sigflow_webhook_retries_scheduled_total", "Deliveries put on the retry topic."
)
SUBSCRIPTIONS_DISABLED = Counter(
    "sigflow_webhook_subscriptions_disabled_total", "Subscriptions disabled by a 410 Gone."
)
IN_FLIGHT = Gauge(
    "sigflow_webhook_in_flight", "Delivery requests in flight per endpoint.", ["endpoint"]
)
WAITING = Gauge(
    "sigflow_webhook_waiting",
    "Deliveries waiting for a free slot of their endpoint.",
    ["endpoint"],
)
REJECTED_RECORDS = Counter(
    "sigflow_webhook_rejected_records_total",
    "Alert or retry records the dispatcher could not decode (sent to the DLQ).",
)
