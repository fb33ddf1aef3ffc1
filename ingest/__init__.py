"""Ingest: sample data, synthetic trades, users' trade files, and the Kafka publisher."""
