"""Sinks: the ClickHouse writer with its migrations (webhooks come later)."""
