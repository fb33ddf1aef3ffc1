"""Where Kafka's default partitioner (murmur2) places a key, and state-table keys placed
on a chosen partition.

The processor's tables write each key's changelog to the partition murmur2 picks for
it (`key_partition`), the one its input records sit on; state that belongs to a
*partition* (not to a record key) must sit on that same partition number to move with
its input on a rebalance. `partition_key` finds such a key by trying suffixes.
"""

from __future__ import annotations

from functools import cache, lru_cache
from itertools import count

from aiokafka.partitioner import murmur2


@lru_cache(maxsize=65536)
def key_partition(key: bytes, partitions: int) -> int:
    """The partition of `partitions` that Kafka's default partitioner gives `key`.

    Cached: output keys repeat (`exchange:symbol`), and aiokafka's murmur2 is pure
    Python."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@cache
def partition_key(name: str, partition: int, partitions: int | None) -> bytes:
    """`name:partition[:n]`, placed on `partition` of `partitions` (any key if None:
    in-process use, where placement does not matter)."""
    if partitions is None:
        return f"{name}:{partition}".encode()
    if not 0 <= partition < partitions:
        raise ValueError(f"partition {partition} outside 0..{partitions - 1}")
    for attempt in count():
        key = f"{name}:{partition}:{attempt}".encode()
        if key_partition(key, partitions) == partition:
            return key
    raise AssertionError("unreachable")  # pragma: no cover
