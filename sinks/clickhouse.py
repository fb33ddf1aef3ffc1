"""The ClickHouse sink: topic records become columnar, deduplicated inserts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from clickhouse_connect.driver.asyncclient import AsyncClient
from clickhouse_connect.driver.exceptions import ClickHouseError
from pydantic import BaseModel

from schemas.codec import Codec, codec_for
from schemas.events import (
    Alert,
    Anomaly,
    Candle,
    IndicatorValues,
    OnchainBlock,
    OnchainTransfer,
    Signal,
    Trade,
)
from schemas.topics import TOPICS
from sigflow import tracing
from sinks import metrics
from sinks.batching import Batch, BatchingSink, dedup_token
from sinks.exceptions import SinkError

log = logging.getLogger(__name__)
Columns = list[list[Any]]


@dataclass(frozen=True)
class TableRoute:
    """Which table a topic's records go to, and how a batch of them becomes columns."""

    topic: str
    table: str
    model: type[BaseModel]
    columns: tuple[str, ...]
    to_columns: Callable[[list[Any]], Columns]

    @property
    def codec(self) -> Codec[BaseModel]:
        return codec_for(self.model)

    @property
    def batched(self) -> bool:
        """Records of the topic hold an array of events (see `TopicSpec.batched`)."""
        return TOPICS[self.topic].batched


def field_columns(model: type[BaseModel]) -> Callable[[list[Any]], Columns]:
    """Columns for a table whose columns are exactly the model's fields."""
    getters = [attrgetter(name) for name in model.model_fields]
    return lambda events: [list(map(getter, events)) for getter in getters]


def indicator_columns(events: list[Any]) -> Columns:
    """Long form: one row per indicator name, so new indicators need no migration."""
    columns: Columns = [[], [], [], [], [], []]
    exchange, symbol, interval, open_time, name, value = columns
    for event in events:
        for indicator, number in event.values.items():
            exchange.append(event.exchange)
            symbol.append(event.symbol)
            interval.append(event.interval)
            open_time.append(event.open_time)
            name.append(indicator)
            value.append(number)
    return columns


def _field_route(topic: str, model: type[BaseModel], table: str | None = None) -> TableRoute:
    return TableRoute(topic, table or topic, model, tuple(model.model_fields), field_columns(model))


ROUTES = (
    _field_route("trades", Trade),
    _field_route("candles", Candle),
    _field_route("signals", Signal),
    _field_route("anomalies", Anomaly),
    _field_route("alerts", Alert),
    TableRoute(
        "indicators",
        "indicators",
        IndicatorValues,
        ("exchange", "symbol", "interval", "open_time", "name", "value"),
        indicator_columns,
    ),
    _field_route("onchain.blocks", OnchainBlock, "onchain_blocks"),
    _field_route("onchain.transfers", OnchainTransfer, "onchain_transfers"),
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

    async def write(self, topic: str, batches: list[Batch]) -> None:
        route = self.routes[topic]
        columns = route.to_columns([row for batch in batches for row in batch.rows])
        rows = len(columns[0])
        if not rows:
            return
        started = time.perf_counter()
        with tracing.span(
            f"clickhouse insert {route.table}",
            kind=tracing.SpanKind.CLIENT,
            links=tracing.distinct_links(link for batch in batches for link in batch.links),
            attributes={
                "db.system": "clickhouse",
                "db.collection.name": f"{self.database}.{route.table}",
                "db.operation.name": "INSERT",
                "messaging.destination.name": topic,
                "sigflow.rows": rows,
            },
        ):
            try:
                await self.client.insert(
                    f"{self.database}.{route.table}",
                    columns,
                    column_names=list(route.columns),
                    column_oriented=True,
                    settings={"insert_deduplication_token": dedup_token(batches)},
                )
            except (ClickHouseError, OSError) as exc:
                raise SinkError(f"insert into {route.table} failed: {exc}") from exc
            log.info(
                "rows written",
                extra={
                    "topic": topic,
                    "table": route.table,
                    "rows": rows,
                    "partitions": sorted(batch.partition for batch in batches),
                    "offsets": {str(b.partition): [b.first_offset, b.last_offset] for b in batches},
                },
            )
        metrics.INSERT_SECONDS.labels(route.table).observe(time.perf_counter() - started)
        metrics.ROWS_WRITTEN.labels(route.table).inc(rows)
        metrics.BATCH_ROWS.labels(route.table).observe(rows)
