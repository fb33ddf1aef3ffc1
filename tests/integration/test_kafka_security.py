"""sigflow against a real Apache Kafka with a SASL_SSL listener (self-signed CA made here).

The broker of this module is its own (free ports, SCRAM and PLAIN users, PEM keystore);
the shared PLAINTEXT broker is not touched. If it cannot start, every test here fails
with the launcher's reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from schemas.codec import codec_for
from schemas.events import Candle, Trade
from schemas.topics import TOPICS
from sigflow.exceptions import KafkaAuthError, KafkaConnectError, KafkaTLSError
from sigflow.kafka import create_producer, ensure_topics, start_kafka_client
from sigflow.kafka_security import kafka_client_options
from sigflow.settings import Settings, settings_env
from sigflow.stack.kafka import KafkaBroker
from sigflow.stack.process import BackgroundProcess, free_port
from sinks.warehouse import connect
from tests.conftest import running
from tests.tls import TLSFiles, make_tls_files

pytestmark = pytest.mark.integration

USER = "sigflow"
PASSWORD = "sasl-pass-4-tests"
MINUTE = 60_000
TRADE = codec_for(Trade)
CANDLE = codec_for(Candle)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory, tls: TLSFiles) -> Iterator[KafkaBroker]:
    """Apache Kafka with a SASL_SSL listener next to its PLAINTEXT one."""
    broker = KafkaBroker(
        tmp_path_factory.mktemp("secure-kafka"),
        port=free_port(),
        controller_port=free_port(),
        sasl_ssl_port=free_port(),
        keystore=tls.server_keystore,
        sasl_users={USER: PASSWORD},
    )
    with running(broker, "Kafka with a SASL_SSL listener", timeout=60):
        yield broker


def secure_settings(
    broker: KafkaBroker, tls: TLSFiles, tmp_path: Path, **overrides: Any
) -> Settings:
    run = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "kafka_bootstrap": broker.sasl_ssl_bootstrap,
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_username": USER,
        "kafka_sasl_password": SecretStr(PASSWORD),
        "kafka_ssl_cafile": tls.ca,
        "topic_prefix": f"s{run}.",
        "processor_app_id": f"processor-{run}",
        "sink_group_id": f"sink-{run}",
        "clickhouse_database": f"s{run}",
        "data_dir": tmp_path / "data",
        "log_json": False,
    }
    # None drops a value, so that its default or a secret file provides it.
    return Settings(**{k: v for k, v in (values | overrides).items() if v is not None})


async def read_until(
    settings: Settings, topic: str, done: Callable[[list[Any]], bool], timeout: float = 30.0
) -> list[Any]:
    """Records of `topic` from the start until `done(records)`, read over the configured
    security protocol."""
    consumer = AIOKafkaConsumer(
        topic,
        **kafka_client_options(settings),
        group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await start_kafka_client(consumer, settings)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not done(records) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            records.extend(r for batch in batches.values() for r in batch)
    finally:
        await consumer.stop()
    return records


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"])
async def test_topics_produce_and_consume_over_sasl_ssl(
    secure_kafka: KafkaBroker,
    tls: TLSFiles,
    tmp_path: Path,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = secure_settings(secure_kafka, tls, tmp_path, kafka_sasl_mechanism=mechanism)
    caplog.set_level(logging.DEBUG)  # aiokafka logs each request, SASL ones included

    created = await ensure_topics(settings)
    assert sorted(created) == sorted(settings.topic(name) for name in TOPICS)

    producer = create_producer(settings)
    await start_kafka_client(producer, settings)
    try:
        for i in range(20):
            await producer.send(
                settings.topic("trades"), f"v{i}".encode(), key=f"k{i % 3}".encode()
            )
        await producer.flush()
    finally:
        await producer.stop()

    records = await read_until(settings, settings.topic("trades"), lambda got: len(got) >= 20)
    assert sorted(r.value for r in records) == sorted(f"v{i}".encode() for i in range(20))
    assert "SaslAuthenticateRequest" in caplog.text
    assert PASSWORD not in caplog.text


async def test_wrong_password_fails_fast_with_one_line_auth_error(
    secure_kafka: KafkaBroker, tls: TLSFiles, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-password-123"
    settings = secure_settings(secure_kafka, tls, tmp_path, kafka_sasl_password=SecretStr(wrong))
    started = time.monotonic()
    with caplog.at_level(logging.DEBUG), pytest.raises(KafkaAuthError) as failure:
        await ensure_topics(settings, timeout=20)
    assert time.monotonic() - started < 20
    message = str(failure.value)
    assert message.startswith(
        f"Kafka at {secure_kafka.sasl_ssl_bootstrap} (SASL_SSL) refused the SCRAM-SHA-512 "
        f"login of user '{USER}': Authentication failed"
    )
    assert "\n" not in message
    assert wrong not in message and wrong not in caplog.text
    assert PASSWORD not in caplog.text


async def test_unknown_user_with_plain_fails_with_auth_error(
    secure_kafka: KafkaBroker, tls: TLSFiles, tmp_path: Path
) -> None:
    settings = secure_settings(
        secure_kafka, tls, tmp_path, kafka_sasl_mechanism="PLAIN", kafka_sasl_username="mallory"
    )
    with pytest.raises(KafkaAuthError, match="refused the PLAIN login of user 'mallory'"):
        await ensure_topics(settings, timeout=20)


async def test_untrusted_ca_fails_with_tls_error(
    secure_kafka: KafkaBroker, tls: TLSFiles, tmp_path: Path
) -> None:
    settings = secure_settings(secure_kafka, tls, tmp_path, kafka_ssl_cafile=tls.untrusted_ca)
    producer = create_producer(settings)
    with pytest.raises(KafkaTLSError) as failure:
        await start_kafka_client(producer, settings, timeout=20)
    message = str(failure.value)
    assert message.startswith(
        f"TLS handshake with Kafka at {secure_kafka.sasl_ssl_bootstrap} (SASL_SSL) failed: "
        "certificate verify failed"
    )
    assert "SIGFLOW_KAFKA_SSL_CAFILE" in message


async def test_plaintext_client_on_the_tls_listener_fails_within_the_timeout(
    secure_kafka: KafkaBroker, tls: TLSFiles, tmp_path: Path
) -> None:
    settings = secure_settings(
        secure_kafka,
        tls,
        tmp_path,
        kafka_security_protocol="PLAINTEXT",
        kafka_sasl_username="",
        kafka_ssl_cafile=None,
    )
    started = time.monotonic()
    with pytest.raises(KafkaConnectError, match=secure_kafka.sasl_ssl_bootstrap):
        await ensure_topics(settings, timeout=5)
    assert time.monotonic() - started < 5 + 10 + 5  # start timeout + probe timeout + slack


def trades_over_two_minutes(start: int) -> list[Any]:
    """Trades of one symbol in two whole minutes, then one that closes both."""
    times = [start + 1_000 * i for i in range(0, 120, 7)] + [start + 3 * MINUTE]
    return [
        TRADE.build(
            exchange="coinbase",
            symbol="BTC-USD",
            trade_id=str(i),
            price=30_000.0 + i,
            size=0.5,
            side="buy" if i % 2 else "sell",
            ts=ts,
            received_ts=ts + 3,
        )
        for i, ts in enumerate(times)
    ]


async def test_processor_and_sink_roles_run_over_sasl_ssl_with_a_secret_file(
    secure_kafka: KafkaBroker, tls: TLSFiles, tmp_path: Path, clickhouse_url: str
) -> None:
    """Faust (processor) and the sink consume and produce over SASL_SSL; the roles read the
    password from a secret file, not from their environment."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "SIGFLOW_KAFKA_SASL_PASSWORD").write_text(PASSWORD)
    settings = secure_settings(
        secure_kafka,
        tls,
        tmp_path,
        clickhouse_url=clickhouse_url,
        secrets_dir=secrets,
        kafka_sasl_password=None,  # the file provides it
        sink_flush_seconds=0.3,
    )
    assert settings.kafka_sasl_password.get_secret_value() == PASSWORD
    env = settings_env(settings)
    del env["SIGFLOW_KAFKA_SASL_PASSWORD"]
    await ensure_topics(settings)

    roles = [
        BackgroundProcess(
            role, tmp_path / "roles", [sys.executable, "-m", "sigflow", role], env=env
        )
        for role in ("process", "sink")
    ]
    for role in roles:
        role.start()
    try:
        trades = trades_over_two_minutes(1_700_000_040_000)
        producer = create_producer(settings)
        await start_kafka_client(producer, settings)
        try:
            for trade in trades:
                await producer.send(
                    settings.topic("trades"), TRADE.encode(trade), key=b"coinbase:BTC-USD"
                )
            await producer.flush()
        finally:
            await producer.stop()

        def closed_candles(records: list[Any]) -> list[int]:
            candles = (CANDLE.decode(record.value) for record in records)
            return sorted(c.open_time for c in candles if c.final and c.interval == "1m")

        records = await read_until(
            settings, settings.topic("candles"), lambda got: len(closed_candles(got)) >= 2, 90
        )
        closed = closed_candles(records)
        assert closed == [1_700_000_040_000, 1_700_000_100_000], "\n".join(
            r.log_tail() for r in roles
        )

        rows = 0
        deadline = time.monotonic() + 60
        while rows < 2 and time.monotonic() < deadline:
            assert all(r.is_running() for r in roles), "\n".join(r.log_tail() for r in roles)
            client = await connect(settings)
            try:
                result = await client.query(
                    f"SELECT count() FROM {settings.clickhouse_database}.candles FINAL "
                    "WHERE final AND interval = '1m'"
                )
                rows = result.result_rows[0][0]
            finally:
                await client.close()
            await asyncio.sleep(0.3)
        assert rows == 2, "\n".join(r.log_tail() for r in roles)
    finally:
        for role in roles:
            role.stop(timeout=20)
        assert PASSWORD not in "".join(r.log_file.read_text() for r in roles)


def test_a_role_with_a_wrong_password_exits_with_one_error_line(
    secure_kafka: KafkaBroker, tls: TLSFiles, tmp_path: Path
) -> None:
    wrong = "wrong-role-password"
    settings = secure_settings(secure_kafka, tls, tmp_path, kafka_sasl_password=SecretStr(wrong))
    result = subprocess.run(
        [sys.executable, "-m", "sigflow", "process"],
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1].startswith(
        f"error: Kafka at {secure_kafka.sasl_ssl_bootstrap} (SASL_SSL) refused the "
        f"SCRAM-SHA-512 login of user '{USER}'"
    )
    assert wrong not in result.stdout + result.stderr
