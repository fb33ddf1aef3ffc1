"""EVM on-chain ingest: JSON-RPC client, ERC-20 Transfer decoding, the reorg-aware block
follower, the topic checkpoint, and the ingestor that ties them to Kafka."""
