"""Exchange trade feeds: one adapter per exchange, registered in `EXCHANGE_MAP`.

Layout (cryptofeed-like):

    base.py        ExchangeAdapter: endpoints and limits as class attributes, and pure
                   methods (symbols, subscribe/ping messages, parse, REST backfill)
    binance.py …   one file per exchange (binance, bybit, coinbase, kraken, okx): its
                   wire format and nothing else
    symbols.py     BASE-QUOTE <-> exchange spelling, unknown symbols refused
    timestamps.py  RFC 3339 / epoch-seconds times to epoch ms (pure)
    tracking.py    duplicates and id gaps (pure)
    pacing.py      full-jitter back-off and the REST token bucket (pure)
    connection.py  one WebSocket's life, shared by all adapters: subscribe, ping,
                   watchdog, reconnect, dlq/unknown handling
    backfill.py    REST calls with rate limits, 429/418 + Retry-After, paging
    feed.py        one exchange: connections split by its limits, dedup, gap backfill
    runner.py      every selected exchange on one shared EventProducer

How to add an exchange (e.g. `kucoin`):

1. Capture the documented example messages as JSON under
   `tests/fixtures/exchanges/kucoin/` (subscribe ack, trade, pong, an error, a REST
   answer), with a README citing the documentation pages; add each one with its
   expected outcome to that directory's `expected.json` (see binance's).
2. Write `ingest/exchanges/kucoin.py`: a subclass of `ExchangeAdapter` that sets `id`,
   `ws_url`, `rest_url`, `max_symbols_per_connection`, `max_symbols_per_subscribe`,
   `ping_style` / `ping_interval` (and `ping_message()` for `PingStyle.MESSAGE`),
   `sequential_trade_ids`, `rest_rate_per_second` / `rest_burst`, and implements
   `exchange_symbol()` (if not `BASEQUOTE`), `subscribe_message()`, `parse_object()` (a
   message already decoded to a JSON object: trades via `self.build_trade(...)` inside
   `with self.reading_trade():`, so a missing or bad field is a malformed message,
   control messages as `Parsed("ack"|"pong"|"error")`, anything else `Parsed("unknown")`,
   other broken input raises `MalformedMessageError`), and either `backfill_request()`
   (ids sequential; set `backfill_direction` if the API pages backwards; APIs paged by
   time get the last published trade's time as `after_ms`, see kraken.py) or
   `recent_trades_request()` (outage filled by time), plus `parse_backfill()`. Override
   `ws_endpoint()` if the URL depends on the symbols, and `parse()` only for messages
   that are not JSON (see okx.py).
3. Register it below in `EXCHANGE_MAP`. The parametrized unit tests then parse every
   fixture of the new directory.
4. Add a wire class for it in `tests/fakes/exchange_server.py` (how the fake server
   acknowledges, answers pings, frames trades and serves the REST backfill) and add it
   to `WIRES`; the integration tests parametrized over `WIRES` then run it through a
   dropped connection, a gap backfill (if `sequential_trade_ids`: a message lost
   mid-stream and a 429 too) or an outage backfill, malformed and unknown messages, and
   the watchdog, against the real Kafka.
5. Document it in README.md's "Exchange feeds" table.
"""

from __future__ import annotations

from ingest.exchanges.base import ExchangeAdapter
from ingest.exchanges.binance import Binance
from ingest.exchanges.bybit import Bybit
from ingest.exchanges.coinbase import Coinbase
from ingest.exchanges.exceptions import UnknownExchangeError
from ingest.exchanges.kraken import Kraken
from ingest.exchanges.okx import Okx

EXCHANGE_MAP: dict[str, type[ExchangeAdapter]] = {
    Binance.id: Binance,
    Bybit.id: Bybit,
    Coinbase.id: Coinbase,
    Kraken.id: Kraken,
    Okx.id: Okx,
}


def adapter_class(exchange: str) -> type[ExchangeAdapter]:
    """The adapter registered for `exchange`; an unknown id is a clear error."""
    try:
        return EXCHANGE_MAP[exchange]
    except KeyError:
        raise UnknownExchangeError(
            f"unknown exchange {exchange!r}: choose from {', '.join(EXCHANGE_MAP)}"
        ) from None


__all__ = ["EXCHANGE_MAP", "ExchangeAdapter", "adapter_class"]
