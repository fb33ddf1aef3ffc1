"""What the Kafka benchmarks share: the broker, isolated settings, worker processes, topics.

A benchmark runs on the broker in `SIGFLOW_KAFKA_BOOTSTRAP` when that is set (a shared
or production-like broker), else on a local Apache Kafka started on free ports for the
run. Every topic and consumer group of a run starts with `bench-<run id>`, so runs never
see each other's records, and the run deletes its topics when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.report import BenchmarkError
from sigflow.settings import Settings, settings_env
from sigflow.stack.kafka import KafkaBroker
from sigflow.stack.process import BackgroundProcess, free_port

# Settings defaults, not the environment: a benchmark must not change with SIGFLOW_*.
DEFAULTS = Settings.model_construct()


@dataclass(frozen=True)
class Broker:
    """Where a benchmark's Kafka traffic goes, and how to say so in its report."""

    bootstrap: str
    description: str


@contextlib.contextmanager
def bench_broker(say: Any = None) -> Iterator[Broker]:
    """`SIGFLOW_KAFKA_BOOTSTRAP` if set, else a local Apache Kafka for the run's duration."""
    if bootstrap := os.environ.get("SIGFLOW_KAFKA_BOOTSTRAP"):
        yield Broker(bootstrap, f"SIGFLOW_KAFKA_BOOTSTRAP {bootstrap}")
        return
    with tempfile.TemporaryDirectory(prefix="sigflow-bench-kafka-") as data_dir:
        broker = KafkaBroker(Path(data_dir), port=free_port(), controller_port=free_port())
        if say is not None:
            say(f"starting a local Apache Kafka {broker.version} on {broker.bootstrap}")
        broker.start()
        try:
            yield Broker(
                broker.bootstrap, f"local Apache Kafka {broker.version} {broker.bootstrap}"
            )
        finally:
            broker.stop()


def run_id() -> str:
    """A fresh prefix for the topics and groups of one benchmark run."""
    return f"bench-{uuid.uuid4().hex[:8]}"


def bench_settings(
    bootstrap: str, prefix: str, app_id: str, data_dir: Path, **extra: Any
) -> Settings:
    """Default settings with the run's broker, topic prefix, group and data directory."""
    return Settings.model_construct(
        **{
            **DEFAULTS.model_dump(),
            "kafka_bootstrap": bootstrap,
            "topic_prefix": f"{prefix}.",
            "processor_app_id": app_id,
            "data_dir": data_dir,
            "log_json": False,
            "log_level": "WARNING",
            **extra,
        }
    )


class WorkerProcess:
    """A Faust worker (`python -m bench.worker_process KIND`) with its `DrainSensor` file.

    The sensor writes, as JSON, when the first input record reached the agent
    (`first_in`) and, if `ends` (partition → end offset of the input) is given, when the
    last one was fully processed (`drained`).
    """

    def __init__(
        self,
        kind: str,
        settings: Settings,
        run_dir: Path,
        ends: dict[int, int] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.state_file = run_dir / f"{settings.processor_app_id}.json"
        argv = [sys.executable, "-m", "bench.worker_process", kind, str(self.state_file)]
        if ends is not None:
            argv.append(json.dumps(ends))
        self.process = BackgroundProcess(
            settings.processor_app_id,
            run_dir,
            argv,
            env={**settings_env(settings), **(env or {})},
        )
        self.kind = kind
        self.data_dir = settings.data_dir

    def start(self) -> None:
        (self.data_dir / "processor").mkdir(parents=True, exist_ok=True)
        self.process.start()

    def stop(self) -> None:
        self.process.stop(timeout=20)

    def state(self) -> dict[str, float]:
        """What the sensor wrote so far (empty before the first record)."""
        try:
            return dict(json.loads(self.state_file.read_text()))
        except (FileNotFoundError, ValueError):
            return {}

    async def wait_for(self, field: str, timeout: float) -> float:
        """The sensor's `field` time once written; fails if the worker dies or times out."""
        deadline = time.monotonic() + timeout
        while (value := self.state().get(field)) is None:
            if not self.process.is_running():
                raise BenchmarkError(
                    f"{self.kind} worker exited before {field}:\n{self.process.log_tail(40)}"
                )
            if time.monotonic() > deadline:
                raise BenchmarkError(
                    f"{self.kind} worker: no {field} within {timeout:g} s:\n"
                    f"{self.process.log_tail(40)}"
                )
            await asyncio.sleep(0.05)
        return value


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Partition → end offset (the next offset to be written) of `topic`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    if not partitions:
        raise BenchmarkError(f"topic {topic} has no partitions (does it exist?)")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def read_topic(
    bootstrap: str, topic: str, start: dict[int, int] | None = None
) -> list[tuple[bytes, bytes]]:
    """(key, value) of every record of `topic` from `start` (default: the beginning) to its end."""
    ends = await end_offsets(bootstrap, topic)
    start = start or {}
    wanted = {TopicPartition(topic, p): end for p, end in ends.items() if end > start.get(p, 0)}
    records: list[tuple[bytes, bytes]] = []
    if not wanted:
        # Also spares aiokafka a stop() right after start(), which raises CancelledError.
        return records
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for tp in wanted:
            consumer.seek(tp, start.get(tp.partition, 0))
        while wanted:
            batches = await consumer.getmany(timeout_ms=1000)
            for tp, batch in batches.items():
                records.extend((r.key or b"", r.value or b"") for r in batch)
                if batch and batch[-1].offset + 1 >= wanted.get(tp, 0):
                    wanted.pop(tp, None)
    finally:
        await consumer.stop()
    return records


async def delete_run_topics(bootstrap: str, prefix: str) -> None:
    """Delete every topic whose name starts with the run's prefix (outputs, changelogs)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        doomed = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
