-- API keys, hashed at rest: only `sha256(secret)` is stored; the key is shown once.
CREATE TABLE IF NOT EXISTS {db}.api_keys
(
    key_id      String,
    name        String,
    key_hash    String,
    created_at  DateTime64(3, 'UTC') DEFAULT now64(3),
    revoked     Bool DEFAULT false
)
ENGINE = ReplacingMergeTree(created_at)
ORDER BY key_id;
