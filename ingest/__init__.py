"""Ingest: sample data, synthetic trades, users' trade files, and the shared Kafka producer."""
