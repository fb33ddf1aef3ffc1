"""The root of every error sigflow raises on purpose.

    SigflowError
    ├── ConfigError          settings that cannot work (bad URL, missing binary)
    ├── StackError           the local broker or warehouse failed to start or stop
    │   └── DependencyUnavailable  Kafka/ClickHouse did not answer within the start-up wait
    │   └── KafkaConnectError    Kafka unreachable or refusing us
    │       ├── KafkaAuthError   the broker refused the SASL login
    │       └── KafkaTLSError    the TLS handshake failed (untrusted CA, wrong certificate)
    ├── SchemaError          (schemas.exceptions) input that does not match a topic's schema
    ├── IngestError          (ingest.exceptions) a source that cannot be read
    ├── IndicatorInputError  (processors.exceptions) a candle an indicator cannot take
    ├── SignalRuleError      (processors.exceptions) a rules file that cannot be used
    └── SinkError            (sinks.exceptions) a warehouse write that failed

The CLI prints any `SigflowError` as one line and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations


class SigflowError(Exception):
    """Base class of all expected sigflow errors."""

    exit_code: int = 1


class ConfigError(SigflowError):
    """Settings or environment that cannot work."""

    exit_code = 2


class StackError(SigflowError):
    """A local service (broker, warehouse) failed to start, answer or stop."""

    exit_code = 3


class DependencyUnavailable(StackError):
    """A service a role needs (Kafka, ClickHouse) did not answer within the start-up wait."""


class KafkaConnectError(StackError):
    """Kafka cannot be reached, or refuses the connection."""


class KafkaAuthError(KafkaConnectError):
    """The broker refused the SASL login (wrong user, password or mechanism)."""


class KafkaTLSError(KafkaConnectError):
    """The TLS handshake with the broker failed (untrusted CA, wrong or missing certificate)."""
