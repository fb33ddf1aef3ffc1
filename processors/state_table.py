"""The processor's Faust table: each key's changelog on the partition Kafka's default
partitioner gives the key, computed from the partition count.

The input records were placed by that partitioner, so a key's state moves with its
input on a rebalance (co-partitioned). Faust's own `use_partitioner=True` asks the
producer's metadata instead, without waiting for it; aiokafka drops a topic it learnt
from a full metadata fetch at the first refresh for a named topic, and the next table
write then crashed its agent. Counting needs no metadata.
"""

from __future__ import annotations

from typing import Any

import faust

from processors.placement import key_partition


class KeyPartitionedTable(faust.Table):  # type: ignore[misc]  # Faust's Table is untyped
    def partition_for_key(self, key: Any) -> int:
        """The changelog partition of `key` (raw bytes)."""
        if self.partitions is None:
            raise TypeError(f"table {self.name!r} needs its partition count")
        return key_partition(key, self.partitions)
