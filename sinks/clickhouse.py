"""The ClickHouse sink: topic records become columnar, deduplicated inserts."""

from __future__ import annotations

import time
from dataclasses import dataclass

from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import BaseModel

from schemas.codec import Codec, codec_for
from schemas.events import Candle, Trade
from sinks import metrics
from sinks.batching import Batch, BatchingSink
from sinks.exceptions import SinkError


@dataclass(frozen=True)
class TableRoute:
    """Which table a topic's records go to; columns are the model's fields."""

    topic: str
    table: str
    model: type[BaseModel]

    @property
    def codec(self) -> Codec[BaseModel]:
        return codec_for(self.model)

    @property
    def columns(self) -> list[str]:
        return list(self.model.model_fields)


ROUTES = (TableRoute("trades", "trades", Trade), TableRoute("candles", "candles", Candle))


class ClickHouseSink(BatchingSink):
    """Writes each batch as one column-oriented insert with a deduplication token."""

    def __init__(
        self,
        client: AsyncClient,
        database: str,
        routes: dict[str, TableRoute],
        *,
        max_rows: int,
        max_age_seconds: float,
    ) -> None:
        super().__init__(max_rows, max_age_seconds)
        self.client = client
        self.database = database
        self.routes = routes

    async def write(self, batch: Batch) -> None:
        route = self.routes[batch.topic]
        columns = route.columns
        data = [[getattr(row, name) for row in batch.rows] for name in columns]
        started = time.perf_counter()
        try:
            await self.client.insert(
                f"{self.database}.{route.table}",
                data,
                column_names=columns,
                column_oriented=True,
                settings={"insert_deduplication_token": batch.dedup_token},
            )
        except (ClickHouseError, OSError) as exc:
            raise SinkError(f"insert into {route.table} failed: {exc}") from exc
        metrics.INSERT_SECONDS.labels(route.table).observe(time.perf_counter() - started)
        metrics.ROWS_WRITTEN.labels(route.table).inc(len(batch.rows))
        metrics.BATCH_ROWS.labels(route.table).observe(len(batch.rows))
