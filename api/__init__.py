"""The thin HTTP API over the warehouse."""
