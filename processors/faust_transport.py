"""Faust's aiokafka transport, fixed to re-read partitions that have no committed offset
and to fetch without stalling.

Faust drops records it fetched while its flow was stopped (a rebalance, table recovery)
and then seeks every partition back to its committed offset to read them again. aiokafka's
`seek_to_committed` only moves partitions whose committed offset is above zero, so a
partition the group had never committed kept its fetch position past the dropped records,
and they were never read. A processor restarted while a partition still had no commit
(a symbol it had not reached yet) lost that partition's backlog.

The app selects this transport with the `sigflow://` broker URL scheme, registered as a
`faust.transports` entry point in pyproject.toml (Faust's extension point for transports).
"""

from __future__ import annotations

from collections.abc import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

SCHEME = "sigflow"


async def seek_to_committed_or_earliest(
    consumer: AIOKafkaConsumer,
) -> dict[TopicPartition, int | None]:
    """Seek the assigned partitions to their committed offsets, and those without one to
    the earliest offset (the processor's reset policy); return the committed offsets."""
    committed: dict[TopicPartition, int | None] = await consumer.seek_to_committed()
    uncommitted = [tp for tp, offset in committed.items() if not offset]
    if uncommitted:
        await consumer.seek_to_beginning(*uncommitted)
    return committed


# How long the broker may hold a fetch that finds no new records. aiokafka leaves a
# partition out of the next fetch while records it fetched are still buffered, and sends
# one fetch per broker at a time; Faust's 1.5 s wait then held a busy input partition
# behind a fetch of only idle ones (the processor's own output topics, once it caught
# up with them) and the worker stalled for ~1.3 s every ~2 s of a backlog.
FETCH_MAX_WAIT_MS = 100


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> AIOKafkaConsumer:
        """Faust's worker consumer, with `FETCH_MAX_WAIT_MS` (Faust hard-codes 1.5 s)."""
        consumer = super()._create_worker_consumer(transport)
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("this aiokafka keeps fetch_max_wait_ms elsewhere; update sigflow")
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Seek to committed offsets, partitions never committed to the earliest."""
        return await self.call_thread(seek_to_committed_or_earliest, self._ensure_consumer())


class Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with `Consumer` above."""

    Consumer = Consumer
