-- On-chain blocks and ERC-20 transfers from the chain feed (topics onchain.blocks and
-- onchain.transfers). A block or a transfer is published again whenever its state
-- changes (new, then confirmed, or reorged / removed after a reorg, and back if the
-- chain flips back). ReplacingMergeTree without a version column keeps the row inserted
-- last for each key, and the sink inserts a chain's records in topic order (one key,
-- one partition), so the row kept is the current state. Read through the views, or
-- with FINAL and the filter they apply: a reorged block or a removed transfer is never
-- counted. No TTL: history is the product, and a TTL that dropped retraction rows
-- before a merge folded them would bring orphaned transfers back.
CREATE TABLE IF NOT EXISTS {db}.onchain_blocks
(
    chain_id       UInt64,
    number         UInt64,
    hash           String,
    parent_hash    String,
    timestamp      DateTime64(3, 'UTC'),
    base_fee       Nullable(UInt64),
    gas_used       UInt64,
    tx_count       UInt32,
    status         Enum8('new' = 1, 'confirmed' = 2, 'reorged' = 3),
    confirmations  UInt32,
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (chain_id, timestamp, number, hash)
SETTINGS non_replicated_deduplication_window = 1000;

-- amount: exact, 30 fraction digits and 46 integer digits (the token list allows at
-- most 30 decimals; the feed dead-letters larger amounts).
CREATE TABLE IF NOT EXISTS {db}.onchain_transfers
(
    chain_id       UInt64,
    block          UInt64,
    block_hash     String,
    timestamp      DateTime64(3, 'UTC'),
    tx_hash        String,
    log_index      UInt32,
    token          LowCardinality(String),
    token_symbol   LowCardinality(String),
    from_address   String,
    to_address     String,
    amount         Decimal256(30),
    usd_value      Nullable(Float64),
    confirmations  UInt32,
    removed        Bool,
    inserted_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (chain_id, token, timestamp, block_hash, log_index)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE VIEW IF NOT EXISTS {db}.onchain_blocks_canonical AS
SELECT * EXCEPT inserted_at FROM {db}.onchain_blocks FINAL WHERE status != 'reorged';

CREATE VIEW IF NOT EXISTS {db}.onchain_transfers_canonical AS
SELECT * EXCEPT inserted_at FROM {db}.onchain_transfers FINAL WHERE NOT removed;
