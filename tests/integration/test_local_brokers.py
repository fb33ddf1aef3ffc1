"""The local brokers of `sigflow stack up`, started for real on free ports in temporary dirs.

Apache Kafka must start on this machine: if it cannot (no Java, no jars, a broken launcher)
these tests fail with the launcher's reason, they never skip.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

import sigflow
from sigflow.exceptions import StackError
from sigflow.stack.kafka import KafkaBroker
from sigflow.stack.process import port_in_use
from sigflow.stack.tansu import TansuBroker

pytestmark = pytest.mark.integration

REPO_ROOT = Path(sigflow.__file__).resolve().parent.parent
HOST = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (held open together so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@contextmanager
def listening_on(port: int) -> Iterator[None]:
    """Another program serving the port a broker wants."""
    with socket.socket() as sock:
        sock.bind((HOST, port))
        sock.listen()
        yield


@contextmanager
def bound_not_listening(port: int) -> Iterator[None]:
    """A port that looks free to a connect() probe but that the broker cannot bind."""
    with socket.socket() as sock:
        sock.bind((HOST, port))
        yield


def start_kafka(broker: KafkaBroker) -> None:
    try:
        broker.start(timeout=60)
    except Exception as exc:  # any reason at all is a failure here, never a skip
        pytest.fail(f"Apache Kafka {broker.version} did not start: {exc}", pytrace=False)


def start_in_another_process(code: str) -> None:
    """Run a start in a Python process that exits, as `sigflow stack up` does."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"start failed:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    port, controller_port = free_ports(2)
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), port, controller_port)
    start_kafka(broker)
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    (port,) = free_ports(1)
    broker = TansuBroker(tmp_path_factory.mktemp("tansu"), port)
    broker.start()
    yield broker
    broker.stop()


async def create_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"test.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def produce(bootstrap: str, topic: str, count: int, *, idempotent: bool) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=idempotent
    )
    await producer.start()
    try:
        batch = [
            await producer.send(topic, key=b"BTC-USDT", value=f"trade-{i}".encode())
            for i in range(count)
        ]
        await asyncio.gather(*batch)
    finally:
        await producer.stop()


async def consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    """Read `count` records as member of `group`, commit, and return their values."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < count:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(record.value for record in records if record.value is not None)
        await consumer.commit()
    finally:
        await consumer.stop()
    return values


async def committed_offset(bootstrap: str, topic: str, group: str) -> int | None:
    """The group's committed offset of partition 0, read by a fresh client from the broker."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()


# -- Apache Kafka -----------------------------------------------------------------------------


async def test_kafka_round_trip_with_idempotent_producer_and_group_commit(
    kafka: KafkaBroker,
) -> None:
    topic = await create_topic(kafka.bootstrap)
    await produce(kafka.bootstrap, topic, 100, idempotent=True)

    values = await consume_and_commit(kafka.bootstrap, topic, "test-group", 100)

    assert values == [f"trade-{i}".encode() for i in range(100)]
    assert await committed_offset(kafka.bootstrap, topic, "test-group") == 100


async def test_kafka_runs_transactions(kafka: KafkaBroker) -> None:
    topic = await create_topic(kafka.bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, transactional_id="test-tx")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topic, b"committed")
        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"aborted")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topic, b"after-abort")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    values: list[bytes | None] = []
    try:
        async with asyncio.timeout(30):
            while len(values) < 2:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.extend(record.value for record in records)
    finally:
        await consumer.stop()
    assert values == [b"committed", b"after-abort"]


def test_kafka_outlives_the_process_that_started_it_and_stops_twice(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    start_in_another_process(
        f"""
        from pathlib import Path
        from sigflow.stack.kafka import KafkaBroker
        KafkaBroker(Path({str(tmp_path)!r}), {port}, {controller_port}).start(timeout=60)
        """
    )
    broker = KafkaBroker(tmp_path, port, controller_port)
    try:
        assert broker.is_running()
        assert port_in_use(HOST, port)
        broker.start()  # already running: nothing to do
    finally:
        broker.stop()
    broker.stop()

    assert not broker.is_running()
    assert not port_in_use(HOST, port)
    assert not port_in_use(HOST, controller_port)
    assert not (tmp_path / "kafka.pid").exists()


def test_kafka_refuses_a_port_in_use(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    broker = KafkaBroker(tmp_path, port, controller_port)

    with listening_on(port), pytest.raises(StackError, match=f"port {port} .* already in use"):
        broker.start()

    assert not broker.is_running()


def test_kafka_that_dies_during_start_up_reports_its_log(tmp_path: Path) -> None:
    port, controller_port = free_ports(2)
    broker = KafkaBroker(tmp_path, port, controller_port)

    with bound_not_listening(controller_port), pytest.raises(StackError) as failure:
        broker.start()

    message = str(failure.value)
    assert "exited during start-up" in message
    assert "Address already in use" in message  # the broker's own log line
    assert not broker.is_running()
    assert not (tmp_path / "kafka.pid").exists()


# -- Tansu ------------------------------------------------------------------------------------


async def test_tansu_round_trip_and_group_commit(tansu: TansuBroker) -> None:
    topic = await create_topic(tansu.bootstrap)
    # No InitProducerId on Tansu: acks=all, but no idempotence.
    await produce(tansu.bootstrap, topic, 100, idempotent=False)

    values = await consume_and_commit(tansu.bootstrap, topic, "test-group", 100)

    assert values == [f"trade-{i}".encode() for i in range(100)]
    assert await committed_offset(tansu.bootstrap, topic, "test-group") == 100


def test_tansu_outlives_the_process_that_started_it_and_stops_twice(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    start_in_another_process(
        f"""
        from pathlib import Path
        from sigflow.stack.tansu import TansuBroker
        TansuBroker(Path({str(tmp_path)!r}), {port}).start()
        """
    )
    broker = TansuBroker(tmp_path, port)
    try:
        assert broker.is_running()
        assert port_in_use(HOST, port)
        broker.start()  # already running: nothing to do
    finally:
        broker.stop()
    broker.stop()

    assert not broker.is_running()
    assert not port_in_use(HOST, port)
    assert not (tmp_path / "tansu.pid").exists()


def test_tansu_refuses_a_port_in_use(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    broker = TansuBroker(tmp_path, port)

    with listening_on(port), pytest.raises(StackError, match=f"port {port} .* already in use"):
        broker.start()

    assert not broker.is_running()


def test_tansu_that_dies_during_start_up_reports_its_log(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    broker = TansuBroker(tmp_path, port)

    with bound_not_listening(port), pytest.raises(StackError) as failure:
        broker.start()

    message = str(failure.value)
    assert "tansu exited" in message
    assert "last lines of" in message
    assert not broker.is_running()
