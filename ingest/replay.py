"""Replaying trades into Kafka: a user's file, or the bundled real-price sample."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ingest.files import RejectedRow, read_trade_file
from ingest.producer import EventProducer
from ingest.sample_data import RealCandle, ensure_sample_candles, load_hourly_candles
from ingest.synthetic import trade_columns_from_candles, trades_from_candles
from sigflow.settings import Settings

SAMPLE_EXCHANGE = "coinbase"
SAMPLE_SYMBOL = "BTC-USD"
SAMPLE_SEED = 20_171_001
SAMPLE_PRICE_DECIMALS = 2  # Coinbase BTC-USD ticks in cents


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay put on the topics."""

    source: str
    published: int
    rejected: int
    seconds: float

    def __str__(self) -> str:
        rate = self.published / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.source}: {self.published:,} trades published, {self.rejected:,} rejected "
            f"to the DLQ, in {self.seconds:.1f} s ({rate:,.0f} trades/s)"
        )


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


async def publish_rows(
    settings: Settings,
    rows: Iterable[Any],
    *,
    source: str,
    total: int | None,
    console: Console,
) -> ReplaySummary:
    """Publish trade structs; `RejectedRow`s go to the DLQ with their reason."""
    started = time.perf_counter()
    published = rejected = 0
    async with EventProducer(settings, component="ingest.replay") as producer:
        with _progress(console) as progress:
            task = progress.add_task(f"replaying {source}", total=total)
            for row in rows:
                if isinstance(row, RejectedRow):
                    await producer.reject(f"{source}:{row.line}", row.raw.encode(), row.reason)
                    rejected += 1
                else:
                    await producer.send_trade(row, source)
                    published += 1
                progress.advance(task)
            await producer.flush()
    return ReplaySummary(source, published, rejected, time.perf_counter() - started)


async def replay_file(settings: Settings, path: Path, *, console: Console) -> ReplaySummary:
    """Publish every trade of a CSV / JSON Lines / Parquet file."""
    return await publish_rows(
        settings, read_trade_file(path), source=str(path), total=None, console=console
    )


def sample_candles(settings: Settings, days: int) -> list[RealCandle]:
    """The newest `days` of real Coinbase BTC-USD hourly candles (fetched once)."""
    candles = load_hourly_candles(ensure_sample_candles(settings.data_dir))
    return candles[-days * 24 :]


def sample_trades(candles: list[RealCandle], trades_per_hour: int) -> Iterable[Any]:
    """Seeded synthetic trades whose hourly OHLC rebuilds each real candle exactly."""
    return trades_from_candles(
        candles,
        exchange=SAMPLE_EXCHANGE,
        symbol=SAMPLE_SYMBOL,
        trades_per_candle=trades_per_hour,
        seed=SAMPLE_SEED,
        price_decimals=SAMPLE_PRICE_DECIMALS,
    )


def sample_trade_times(candles: list[RealCandle], trades_per_hour: int) -> np.ndarray:
    """Event times of `sample_trades()` as one column (to know what candles to expect)."""
    columns = trade_columns_from_candles(
        candles,
        trades_per_candle=trades_per_hour,
        seed=SAMPLE_SEED,
        price_decimals=SAMPLE_PRICE_DECIMALS,
    )
    return columns["ts"]


async def replay_sample(
    settings: Settings, *, days: int, trades_per_hour: int, console: Console
) -> ReplaySummary:
    """Publish the bundled sample: real hourly prices, synthetic trades inside them."""
    candles = sample_candles(settings, days)
    return await publish_rows(
        settings,
        sample_trades(candles, trades_per_hour),
        source=f"sample {SAMPLE_EXCHANGE}:{SAMPLE_SYMBOL} ({len(candles)} real hours)",
        total=len(candles) * trades_per_hour,
        console=console,
    )
