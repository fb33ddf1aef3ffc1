-- Webhook subscriptions and every delivery attempt. Both are ReplacingMergeTree on
-- their natural key with an explicit version, so an update (disable, rotate) or a
-- re-recorded attempt after a crash is one row when read with FINAL.
CREATE TABLE IF NOT EXISTS {db}.webhook_subscriptions
(
    subscription_id             String,
    url                         String,
    secret                      String,
    previous_secret             String DEFAULT '',
    previous_secret_expires_at  Nullable(DateTime64(3, 'UTC')),
    kinds                       Array(String),
    symbols                     Array(String),
    min_severity                LowCardinality(String),
    enabled                     Bool,
    disabled_reason             String DEFAULT '',
    created_at                  DateTime64(3, 'UTC'),
    updated_at                  DateTime64(3, 'UTC'),
    version                     UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY subscription_id;

-- One row per attempt (status `pending` marks a queued redelivery until it is tried).
CREATE TABLE IF NOT EXISTS {db}.webhook_deliveries
(
    webhook_id       String,
    subscription_id  String,
    alert_id         String,
    attempt          UInt16,
    status           LowCardinality(String),
    status_code      Nullable(UInt16),
    error            String,
    latency_ms       Float64,
    attempted_at     DateTime64(3, 'UTC'),
    next_retry_at    Nullable(DateTime64(3, 'UTC')),
    payload          String CODEC(ZSTD(3)),
    version          UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (webhook_id, attempt)
TTL toDateTime(attempted_at) + INTERVAL 90 DAY;

-- The current state of each delivery: its latest attempt.
CREATE VIEW IF NOT EXISTS {db}.webhook_delivery_status AS
SELECT
    webhook_id,
    any(subscription_id)           AS subscription_id,
    any(alert_id)                  AS alert_id,
    max(attempt)                   AS attempts,
    argMax(status, attempt)        AS status,
    argMax(status_code, attempt)   AS status_code,
    argMax(error, attempt)         AS error,
    argMax(attempted_at, attempt)  AS last_attempt_at,
    argMax(next_retry_at, attempt) AS next_retry_at,
    argMax(payload, attempt)       AS payload
FROM {db}.webhook_deliveries FINAL
GROUP BY webhook_id;
