"""Key placement matches Kafka's default partitioner, so table state moves with its input."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner

from processors.app import create_app
from processors.placement import key_partition, partition_key
from processors.state_table import KeyPartitionedTable
from sigflow.settings import Settings

KEYS = [
    f"{exchange}:{symbol}".encode()
    for exchange in ("binance", "coinbase", "okx")
    for symbol in ("BTC-USDT", "ETH-USDT", "SOL-USDT", "DOGE-USD")
]


@pytest.mark.parametrize("partitions", [1, 3, 12])
def test_a_key_lands_where_the_default_producer_partitioner_puts_it(partitions: int) -> None:
    every = list(range(partitions))
    for key in KEYS:
        assert key_partition(key, partitions) == DefaultPartitioner()(key, every, every)


def test_a_partition_key_sits_on_its_partition() -> None:
    for partition in range(12):
        assert key_partition(partition_key("__feeds__", partition, 12), 12) == partition


def test_the_processor_tables_place_changelog_records_by_key_without_producer_metadata() -> None:
    settings = Settings(topic_partitions=6)
    tables = create_app(settings).tables
    assert tables, "the processor has state tables"
    for table in tables.values():
        assert isinstance(table, KeyPartitionedTable)
        for key in KEYS:
            assert table.partition_for_key(key) == key_partition(key, 6)
