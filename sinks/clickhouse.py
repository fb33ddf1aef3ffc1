"""The ClickHouse sink: topic records become columnar, deduplicated inserts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import BaseModel

from schemas.codec import Codec, codec_for
from schemas.events import Candle, IndicatorValues, Signal, Trade
from sinks import metrics
from sinks.batching import Batch, BatchingSink
from sinks.exceptions import SinkError


@dataclass(frozen=True)
class TableRoute:
    """Which table a topic's records go to, and how one record becomes rows."""

    topic: str
    table: str
    model: type[BaseModel]
    columns: tuple[str, ...]
    to_rows: Callable[[Any], Iterable[Sequence[Any]]]

    @property
    def codec(self) -> Codec[BaseModel]:
        return codec_for(self.model)


def one_row_per_event(model: type[BaseModel]) -> Callable[[Any], Iterable[Sequence[Any]]]:
    """Rows for a table whose columns are exactly the model's fields."""
    fields = tuple(model.model_fields)
    return lambda event: ((*(getattr(event, name) for name in fields),),)


def indicator_rows(event: Any) -> Iterable[Sequence[Any]]:
    """Long form: one row per indicator name, so new indicators need no migration."""
    head = (event.exchange, event.symbol, event.interval, event.open_time)
    return [(*head, name, value) for name, value in event.values.items()]


ROUTES = (
    TableRoute("trades", "trades", Trade, tuple(Trade.model_fields), one_row_per_event(Trade)),
    TableRoute("candles", "candles", Candle, tuple(Candle.model_fields), one_row_per_event(Candle)),
    TableRoute("signals", "signals", Signal, tuple(Signal.model_fields), one_row_per_event(Signal)),
    TableRoute(
        "indicators",
        "indicators",
        IndicatorValues,
        ("exchange", "symbol", "interval", "open_time", "name", "value"),
        indicator_rows,
    ),
)


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
        rows = [row for event in batch.rows for row in route.to_rows(event)]
        if not rows:
            return
        columns = [list(column) for column in zip(*rows, strict=True)]
        started = time.perf_counter()
        try:
            await self.client.insert(
                f"{self.database}.{route.table}",
                columns,
                column_names=list(route.columns),
                column_oriented=True,
                settings={"insert_deduplication_token": batch.dedup_token},
            )
        except (ClickHouseError, OSError) as exc:
            raise SinkError(f"insert into {route.table} failed: {exc}") from exc
        metrics.INSERT_SECONDS.labels(route.table).observe(time.perf_counter() - started)
        metrics.ROWS_WRITTEN.labels(route.table).inc(len(rows))
        metrics.BATCH_ROWS.labels(route.table).observe(len(rows))
