"""One typed settings object for every role; each knob is also a `SIGFLOW_*` env var."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from sigflow.exceptions import ConfigError

BrokerKind = Literal["auto", "kafka", "tansu"]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "sigflow"


class Settings(BaseSettings):
    """Every setting has a default that works on one machine with `sigflow stack up`."""

    model_config = SettingsConfigDict(env_prefix="SIGFLOW_", env_file=".env", extra="ignore")

    # Kafka
    kafka_bootstrap: str = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers, comma separated host:port."
    )
    topic_prefix: str = Field("sigflow.", description="Prefix of every sigflow topic name.")
    topic_partitions: int = Field(
        3, ge=1, description="Partitions for topics sigflow creates (keys keep per-symbol order)."
    )
    topic_replication: int = Field(1, ge=1, description="Replication factor for new topics.")
    kafka_idempotent_producer: bool = Field(
        True,
        description="acks=all + idempotent producer; turn off only for brokers without "
        "InitProducerId (the Tansu quick-start broker).",
    )
    kafka_session_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="Consumer group session timeout: how fast a dead member is replaced.",
    )

    kafka_delivery_timeout_ms: int = Field(
        120_000,
        ge=1000,
        description="How long ingest keeps retrying a record while Kafka is unreachable "
        "before the role fails (and resumes from its checkpoint on restart).",
    )

    # Ingest
    ingest_max_pending: int = Field(
        100_000,
        ge=1,
        description="Records an ingest process may have waiting for Kafka acks; past it, "
        "readers wait (back-pressure) instead of buffering more.",
    )

    # ClickHouse
    clickhouse_url: str = Field(
        "http://127.0.0.1:8123", description="ClickHouse HTTP endpoint (server or embedded engine)."
    )
    clickhouse_database: str = Field("sigflow", description="Database holding sigflow tables.")
    clickhouse_user: str = Field("default", description="ClickHouse user.")
    clickhouse_password: SecretStr = Field(SecretStr(""), description="ClickHouse password.")
    warehouse_password: SecretStr = Field(
        SecretStr(""),
        description="Password the embedded warehouse requires (empty: none; loopback only).",
    )

    # Local stack
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Where the local stack keeps broker logs, warehouse files and sample data.",
    )
    broker: BrokerKind = Field(
        "auto", description="Local broker for `stack up`: kafka (needs Java 17), tansu, or auto."
    )
    kafka_version: str = Field("4.4.0", description="Apache Kafka release the local launcher runs.")

    # Processing
    candle_intervals: list[str] = Field(
        default_factory=lambda: ["1m"], description="Candle intervals built by the processor."
    )
    allowed_lateness_ms: int = Field(
        2_000,
        ge=0,
        description="How far behind the newest trade a trade may arrive and still count.",
    )
    signal_rules: Path | None = Field(
        None, description="TOML file of signal rules (empty: the packaged defaults)."
    )
    processor_batch_size: int = Field(
        2_000, ge=1, description="Trades the processor takes per micro-batch."
    )
    processor_batch_seconds: float = Field(
        0.2, gt=0, description="Longest wait to fill a processor micro-batch."
    )
    processor_app_id: str = Field("sigflow-processor", description="Faust app id (consumer group).")

    # Sink
    sink_group_id: str = Field("sigflow-sink", description="Consumer group of the ClickHouse sink.")
    sink_batch_rows: int = Field(50_000, ge=1, description="Rows that trigger a warehouse flush.")
    sink_flush_seconds: float = Field(1.0, gt=0, description="Longest time rows wait for a flush.")

    # API
    api_host: str = Field("127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")

    api_public_read: bool = Field(
        False, description="Serve /v1 reads without an API key (rate-limited per client IP)."
    )
    api_rate_limit_per_minute: int = Field(
        600, ge=1, description="Requests per minute per API key (or per IP when public)."
    )

    # API: live view, stream and browser access
    api_cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins allowed to call the API from a browser (CORS), e.g. "
        '["https://dash.example.com"]; empty: none.',
    )
    api_stream_queue_size: int = Field(
        1_000,
        ge=1,
        description="Events a live-stream client may have waiting; past it the client is "
        "dropped with a reason instead of slowing the others.",
    )
    api_stream_max_lag: int = Field(
        10_000,
        ge=0,
        description="Records the API's topic consumer may be behind and still be ready.",
    )
    api_stream_heartbeat_seconds: float = Field(
        15.0, gt=0, description="Keep-alive interval of idle live-stream connections."
    )
    api_stream_recent: int = Field(
        50,
        ge=0,
        description="Newest events per topic (signals, anomalies ...) kept in memory and "
        "sent to a stream client that asks for a snapshot.",
    )
    api_price_max_skew_ms: int = Field(
        60_000,
        ge=0,
        description="An exchange's last trade older than this behind the symbol's newest "
        "trade is left out of the cross-exchange price.",
    )

    # Observability
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_json: bool = Field(True, description="Structured JSON logs (false: human-readable).")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus metrics port for ingest/process/sink (0: off)."
    )

    @field_validator("clickhouse_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = urlsplit(value)
        try:
            url.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}") from exc
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"must be http(s)://host:port, got {value!r}")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for address in value.split(","):
            host, _, port = address.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"must be host:port[,host:port...], got {value!r}")
        return value

    def topic(self, name: str) -> str:
        """Full Kafka topic name for a registry name such as `trades`."""
        return f"{self.topic_prefix}{name}"


def load_settings() -> Settings:
    """Settings from the environment; a bad value is a `ConfigError` naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"SIGFLOW_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings read once per process from the environment."""
    return load_settings()


def settings_env(settings: Settings) -> dict[str, str]:
    """`SIGFLOW_*` variables that reproduce `settings` in a child process."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue  # unset: the child falls back to the same default
        if isinstance(value, SecretStr):
            text = value.get_secret_value()
        elif isinstance(value, list | dict):
            text = json.dumps(value)
        else:
            text = str(value)
        env[f"SIGFLOW_{name.upper()}"] = text
    return env
