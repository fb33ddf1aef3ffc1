"""One typed settings object for every role; each knob is also a `SIGFLOW_*` env var."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SecretsSettingsSource,
    SettingsConfigDict,
)

from sigflow.exceptions import ConfigError

BrokerKind = Literal["auto", "kafka", "tansu"]
KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "sigflow"


class ExchangeUrls(BaseModel):
    """Endpoints that replace an exchange adapter's production URLs (proxies, tests)."""

    ws: str | None = Field(None, description="WebSocket base URL, e.g. ws://127.0.0.1:9001.")
    rest: str | None = Field(None, description="REST base URL, e.g. http://127.0.0.1:9001.")


class Settings(BaseSettings):
    """Every setting has a default that works on one machine with `sigflow stack up`."""

    model_config = SettingsConfigDict(env_prefix="SIGFLOW_", env_file=".env", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: arguments, env, .env, then secret files (they fill what is unset).
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            SecretFiles(settings_cls, (init_settings, env_settings, dotenv_settings)),
        )

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
    ingest_batch_trades: int = Field(
        500, ge=1, description="Most trades of one exchange:symbol in one `trades` record."
    )
    ingest_linger_ms: float = Field(
        5.0, ge=0, description="Longest a trade waits for more of its key before it is sent."
    )

    # Exchange feeds (`sigflow ingest exchanges`)
    exchanges: list[str] = Field(
        default_factory=lambda: ["binance", "bybit"],
        description="Exchanges whose spot trades `ingest exchanges` follows (ids of EXCHANGE_MAP).",
    )
    exchange_symbols: list[str] = Field(
        default_factory=lambda: ["BTC-USDT", "ETH-USDT"],
        description="Symbols (BASE-QUOTE) followed on every selected exchange.",
    )
    exchange_urls: dict[str, ExchangeUrls] = Field(
        default_factory=dict,
        description='Per-exchange endpoint overrides as JSON, e.g. {"binance": {"ws": '
        '"ws://127.0.0.1:9001", "rest": "http://127.0.0.1:9001"}} (proxies, tests).',
    )
    exchange_silence_seconds: float = Field(
        60.0,
        gt=0,
        description="Watchdog: a connection that receives nothing (not even a pong) for this "
        "long is closed and reopened.",
    )
    exchange_backoff_initial_seconds: float = Field(
        0.5, gt=0, description="First reconnect/retry back-off ceiling (doubles, full jitter)."
    )
    exchange_backoff_max_seconds: float = Field(
        30.0, gt=0, description="Largest reconnect/retry back-off ceiling."
    )
    exchange_dedup_window: int = Field(
        100_000,
        ge=1,
        description="Trade ids remembered per exchange without sequential ids, to drop "
        "duplicates after a reconnect or an outage backfill.",
    )
    exchange_backfill_max_trades: int = Field(
        50_000,
        ge=0,
        description="Largest id gap backfilled over REST; a longer one fills only its newest "
        "part and logs the rest as lost.",
    )
    exchange_rest_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout of one REST backfill request."
    )
    exchange_rest_max_attempts: int = Field(
        5, ge=1, description="Attempts per REST request (429/418/5xx/network errors retried)."
    )

    # Chain ingest (EVM JSON-RPC)
    chain_rpc_url: SecretStr = Field(
        SecretStr(""),
        description="EVM JSON-RPC endpoint of `ingest chain` (secret: provider URLs carry keys).",
    )
    chain_id: int | None = Field(
        None, ge=1, description="Chain id the node must serve (checked with eth_chainId)."
    )
    chain_tokens: Path | None = Field(
        None, description="TOML or JSON list of ERC-20 tokens: address, symbol, decimals."
    )
    chain_confirmations: int = Field(
        12, ge=1, description="Confirmations (blocks from a block to the head) that confirm it."
    )
    chain_poll_seconds: float = Field(
        2.0, gt=0, description="How often the chain feed polls the head when caught up."
    )
    chain_batch_blocks: int = Field(
        100, ge=1, description="Blocks fetched per batch request (catching up runs in batches)."
    )
    chain_reorg_window: int = Field(
        128,
        ge=2,
        description="Recent blocks remembered to follow a reorg; deeper reorgs stop the feed.",
    )
    chain_rpc_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout of one JSON-RPC HTTP request."
    )
    chain_rpc_retries: int = Field(
        5, ge=0, description="Retries of a JSON-RPC request on transport errors, 429 and 5xx."
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
        default_factory=lambda: ["1s", "1m", "5m", "15m", "1h", "1d"],
        description=(
            "Candle intervals built by the processor; each must be a multiple of the "
            "finest, which alone decides lateness."
        ),
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
        2_000,
        ge=1,
        description="Most records in one processor micro-batch.",
    )
    processor_batch_seconds: float = Field(
        0.005,
        gt=0,
        description="Longest a processor micro-batch waits to fill (the latency it adds).",
    )
    processor_record_batch_bytes: int = Field(
        512 * 1024,
        ge=16 * 1024,
        description=(
            "Largest Kafka record batch the processor writes; keep it under the broker's "
            "message.max.bytes (1 MiB by default)."
        ),
    )
    processor_app_id: str = Field("sigflow-processor", description="Faust app id (consumer group).")

    # Anomalies and alerts
    anomaly_rules: Path | None = Field(
        None, description="TOML file of market anomaly thresholds (empty: the packaged defaults)."
    )
    alert_rules: Path | None = Field(
        None, description="TOML file of alert rules (empty: the packaged defaults)."
    )

    # On-chain anomalies
    token_prices: Path | None = Field(
        None,
        description="TOML file mapping tokens to priced assets and the price feed rules "
        "(empty: the packaged defaults).",
    )

    # Sink
    sink_group_id: str = Field("sigflow-sink", description="Consumer group of the ClickHouse sink.")
    sink_batch_rows: int = Field(50_000, ge=1, description="Rows that trigger a warehouse flush.")
    sink_flush_seconds: float = Field(1.0, gt=0, description="Longest time rows wait for a flush.")

    # Webhooks
    webhook_group_id: str = Field(
        "sigflow-webhooks", description="Consumer group of the webhook dispatcher."
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="Longest one delivery attempt may take (connect to response)."
    )
    webhook_max_attempts: int = Field(
        10, ge=1, description="Attempts per delivery before it goes to `webhooks.dlq`."
    )
    webhook_backoff_base_seconds: float = Field(
        10.0, gt=0, description="Delay before the 2nd attempt; doubles per attempt (jittered)."
    )
    webhook_backoff_max_seconds: float = Field(
        3600.0,
        gt=0,
        description="Longest back-off between two attempts (Retry-After may ask more).",
    )
    webhook_concurrency: int = Field(
        64, ge=1, description="Delivery requests in flight at once, over all endpoints."
    )
    webhook_endpoint_concurrency: int = Field(
        4, ge=1, description="Delivery requests in flight at once to one endpoint (host:port)."
    )
    webhook_endpoint_backlog: int = Field(
        100,
        ge=1,
        description="Deliveries waiting for one endpoint before more are deferred to the retry "
        "topic (a slow receiver cannot hold the others up).",
    )
    webhook_max_pending: int = Field(
        1000, ge=1, description="Alerts and retries in progress at once; consumption pauses there."
    )
    webhook_allow_private: bool = Field(
        False,
        description="Allow webhook URLs that resolve to loopback, private, link-local or other "
        "non-public addresses (off: refused, against SSRF).",
    )
    webhook_allowed_networks: list[str] = Field(
        default_factory=list,
        description='CIDRs allowed although not public, e.g. ["10.1.2.0/24"] (JSON list).',
    )
    webhook_secret_rotation_grace_seconds: float = Field(
        86_400.0,
        ge=0,
        description="How long the previous secret keeps signing after `rotate-secret`.",
    )
    webhook_subscription_refresh_seconds: float = Field(
        5.0, gt=0, description="How often the dispatcher re-reads subscriptions."
    )
    webhook_secrets_key: SecretStr = Field(
        SecretStr(""),
        description="Fernet key(s), comma-separated, sealing webhook signing secrets in the "
        "warehouse (the first seals, any opens; empty: stored plain). "
        "`sigflow webhooks generate-key` makes one.",
    )

    # API
    api_host: str = Field("127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")

    api_public_read: bool = Field(
        False,
        description="Serve /v1 reads without an API key (rate-limited per client IP); "
        "/v1/webhooks always needs a key.",
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
        0,
        ge=0,
        le=65535,
        description="Port of the /metrics, /healthz, /readyz server of ingest/process/sink/"
        "dispatch (0: off; the API serves them on its own port).",
    )

    # Tracing (README "Tracing and logs"): OpenTelemetry, off by default
    tracing: Literal["none", "otlp", "console"] = Field(
        "none",
        description="Span exporter: none (off: no spans, no trace headers), otlp (OTLP/HTTP "
        "to SIGFLOW_OTLP_ENDPOINT), console (one JSON span per line on stdout).",
    )
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP traces URL, e.g. http://collector:4318/v1/traces (unset: the "
        "OTEL_EXPORTER_OTLP_* env vars, else http://localhost:4318/v1/traces).",
    )
    tracing_service_name: str = Field(
        "sigflow", description="service.name prefix; each role adds its name (sigflow-sink)."
    )
    tracing_sample_ratio: float = Field(
        1.0, ge=0, le=1, description="Share of new traces recorded (children follow parents)."
    )

    # Deployment: health server and start-up
    metrics_host: str = Field(
        "127.0.0.1", description="Address the metrics/health server binds to (0.0.0.0 in a pod)."
    )
    startup_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="How long a role waits at start-up for Kafka/ClickHouse before it exits.",
    )
    shutdown_timeout_seconds: float = Field(
        20.0,
        gt=0,
        description=(
            "How long the processor may take to stop after SIGTERM/SIGINT before it exits "
            "anyway (unacked records are read again on restart)."
        ),
    )
    readiness_cache_seconds: float = Field(
        5.0, ge=0, description="How long a /readyz dependency check result is reused."
    )

    # Secure connections: Kafka TLS/SASL, ClickHouse TLS, API TLS (see README "Secure
    # connections"). Secrets are SecretStr, read from env or from files in `secrets_dir`.
    secrets_dir: Path | None = Field(
        None,
        description="Directory of secret files, one per setting named like its env var "
        "(e.g. /run/secrets/SIGFLOW_KAFKA_SASL_PASSWORD); env vars take precedence.",
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT",
        description="Kafka security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL.",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        "SCRAM-SHA-512", description="SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_sasl_username: str = Field("", description="SASL user (SASL_* protocols).")
    kafka_sasl_password: SecretStr = Field(
        SecretStr(""), description="SASL password (SASL_* protocols)."
    )
    kafka_ssl_cafile: Path | None = Field(
        None, description="PEM CA bundle that signed the brokers' certificates (empty: system CAs)."
    )
    kafka_ssl_certfile: Path | None = Field(
        None, description="PEM client certificate for mutual TLS (may also hold the key)."
    )
    kafka_ssl_keyfile: Path | None = Field(
        None, description="PEM private key of the client certificate."
    )
    kafka_ssl_key_password: SecretStr = Field(
        SecretStr(""), description="Password of an encrypted client key (empty: not encrypted)."
    )
    kafka_ssl_check_hostname: bool = Field(
        True, description="Check that broker certificates name the host connected to."
    )
    clickhouse_verify: bool = Field(
        True, description="Verify the ClickHouse server certificate (https URLs)."
    )
    clickhouse_ca_file: Path | None = Field(
        None, description="PEM CA bundle for the ClickHouse server certificate (empty: system CAs)."
    )
    clickhouse_client_cert: Path | None = Field(
        None, description="PEM client certificate for ClickHouse mutual TLS."
    )
    clickhouse_client_cert_key: Path | None = Field(
        None, description="PEM private key of the ClickHouse client certificate."
    )
    api_ssl_certfile: Path | None = Field(
        None, description="PEM certificate (chain) the API serves HTTPS with (empty: plain HTTP)."
    )
    api_ssl_keyfile: Path | None = Field(
        None, description="PEM private key of the API certificate."
    )
    api_ssl_keyfile_password: SecretStr = Field(
        SecretStr(""), description="Password of an encrypted API key (empty: not encrypted)."
    )

    @field_validator(
        "kafka_ssl_cafile",
        "kafka_ssl_certfile",
        "kafka_ssl_keyfile",
        "clickhouse_ca_file",
        "clickhouse_client_cert",
        "clickhouse_client_cert_key",
        "api_ssl_certfile",
        "api_ssl_keyfile",
    )
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @model_validator(mode="after")
    def _secure_connections_consistent(self) -> Settings:
        protocol = self.kafka_security_protocol
        if protocol.startswith("SASL_"):
            if not self.kafka_sasl_username or not self.kafka_sasl_password.get_secret_value():
                raise ValueError(
                    f"SIGFLOW_KAFKA_SECURITY_PROTOCOL={protocol} needs SIGFLOW_KAFKA_SASL_USERNAME "
                    "and SIGFLOW_KAFKA_SASL_PASSWORD"
                )
        elif self.kafka_sasl_username:
            raise ValueError(
                "SIGFLOW_KAFKA_SASL_USERNAME is set but "
                f"SIGFLOW_KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
                "(use SASL_SSL or SASL_PLAINTEXT)"
            )
        tls_files = [self.kafka_ssl_cafile, self.kafka_ssl_certfile, self.kafka_ssl_keyfile]
        if protocol not in ("SSL", "SASL_SSL") and any(tls_files):
            raise ValueError(
                f"SIGFLOW_KAFKA_SSL_* files are set but SIGFLOW_KAFKA_SECURITY_PROTOCOL={protocol} "
                "does not use TLS (use SSL or SASL_SSL)"
            )
        pairs = [
            ("SIGFLOW_KAFKA_SSL_KEYFILE", self.kafka_ssl_keyfile, self.kafka_ssl_certfile),
            (
                "SIGFLOW_CLICKHOUSE_CLIENT_CERT_KEY",
                self.clickhouse_client_cert_key,
                self.clickhouse_client_cert,
            ),
            ("SIGFLOW_API_SSL_KEYFILE", self.api_ssl_keyfile, self.api_ssl_certfile),
        ]
        for name, key, cert in pairs:
            if key is not None and cert is None:
                raise ValueError(f"{name} needs its certificate file set as well")
        if self.api_ssl_certfile is not None and self.api_ssl_keyfile is None:
            raise ValueError("SIGFLOW_API_SSL_CERTFILE needs SIGFLOW_API_SSL_KEYFILE")
        clickhouse_tls = [self.clickhouse_ca_file, self.clickhouse_client_cert]
        if any(clickhouse_tls) and urlsplit(self.clickhouse_url).scheme != "https":
            raise ValueError(
                "SIGFLOW_CLICKHOUSE_CA_FILE/CLIENT_CERT need an https:// SIGFLOW_CLICKHOUSE_URL"
            )
        return self

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

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a CIDR network: {network!r}") from exc
        return value

    @model_validator(mode="after")
    def _window_holds_the_depth(self) -> Settings:
        if self.chain_reorg_window <= self.chain_confirmations:
            raise ValueError(
                f"chain_reorg_window ({self.chain_reorg_window}) must exceed "
                f"chain_confirmations ({self.chain_confirmations})"
            )
        return self

    def topic(self, name: str) -> str:
        """Full Kafka topic name for a registry name such as `trades`."""
        return f"{self.topic_prefix}{name}"


class SecretFiles(PydanticBaseSettingsSource):
    """Secret files from the `secrets_dir` that the other sources name (Docker/Kubernetes
    mount them at /run/secrets): `secrets_dir` itself is an ordinary setting, so it is found
    in the arguments, env or .env before its files are read."""

    def __init__(
        self, settings_cls: type[BaseSettings], sources: tuple[PydanticBaseSettingsSource, ...]
    ) -> None:
        super().__init__(settings_cls)
        self.sources = sources

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole directory at once

    def __call__(self) -> dict[str, Any]:
        directory = next(
            (found for source in self.sources if (found := source().get("secrets_dir"))), None
        )
        if directory is None:
            return {}
        if not Path(directory).is_dir():
            raise ConfigError(
                f"invalid settings: SIGFLOW_SECRETS_DIR: no such directory: {directory}"
            )
        return SecretsSettingsSource(self.settings_cls, secrets_dir=directory)()


def load_settings() -> Settings:
    """Settings from the environment; a bad value is a `ConfigError` naming the variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(f"invalid settings: {validation_problems(exc)}") from None


def validation_problems(exc: ValidationError) -> str:
    """One line naming each bad `SIGFLOW_*` variable (or the rule that two of them break)."""
    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            name = "_".join(str(part) for part in error["loc"]).upper()
            message = f"SIGFLOW_{name}: {message}"
        problems.append(message)
    return "; ".join(problems)


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
