"""Every selected exchange feed on one shared `EventProducer`, until cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ingest.exchanges import adapter_class
from ingest.exchanges.base import ExchangeAdapter
from ingest.exchanges.exceptions import UnknownExchangeError
from ingest.exchanges.feed import ExchangeFeed
from ingest.exchanges.symbols import split_symbol
from ingest.producer import EventProducer
from sigflow.settings import Settings


def select_adapters(
    settings: Settings, exchanges: Sequence[str], symbols: Sequence[str]
) -> list[ExchangeAdapter]:
    """Adapters for `exchanges` x `symbols`; bad names fail here, before anything connects."""
    if not exchanges:
        raise UnknownExchangeError("no exchange selected")
    if not symbols:
        raise UnknownExchangeError("no symbol selected")
    for symbol in symbols:
        split_symbol("sigflow", symbol)
    for name in settings.exchange_urls:
        adapter_class(name)  # an override for an unknown exchange is a typo
    return [adapter_class(name)(symbols) for name in exchanges]


def build_feeds(
    settings: Settings, producer: EventProducer, exchanges: Sequence[str], symbols: Sequence[str]
) -> list[ExchangeFeed]:
    """One feed per selected exchange, all publishing through `producer`."""
    return [
        ExchangeFeed(adapter, settings, producer)
        for adapter in select_adapters(settings, exchanges, symbols)
    ]


async def run_feeds(feeds: Sequence[ExchangeFeed]) -> None:
    """Run the feeds until cancelled; one failing feed stops all and its error is raised.

    Connection trouble never gets here (connections retry forever); what does is fatal
    for the process, such as Kafka not acknowledging records (`DeliveryError`).
    """
    try:
        async with asyncio.TaskGroup() as group:
            for feed in feeds:
                group.create_task(feed.run(), name=f"feed:{feed.source}")
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error inside (possibly nested) task-group failures."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
