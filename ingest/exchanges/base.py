"""The adapter contract: what one exchange's wire format looks like, with no I/O.

An adapter knows its endpoints and limits (class attributes), spells symbols, writes
subscribe and ping messages, parses every message into normalized `Trade` structs or a
control kind, and builds/parses REST backfill requests. Connections, retries, gaps and
Kafka live in `ingest.exchanges.connection` and `ingest.exchanges.backfill`, shared by
every adapter, so an adapter is small and tested without a network.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

import orjson

from ingest.exchanges.exceptions import MalformedMessageError
from ingest.exchanges.symbols import SymbolMap
from schemas.codec import codec_for
from schemas.events import Trade
from schemas.exceptions import SchemaError

TRADE_CODEC = codec_for(Trade)

MessageKind = Literal["trades", "ack", "pong", "error", "unknown"]


class PingStyle(StrEnum):
    """How a connection is kept alive."""

    FRAME = "frame"  # WebSocket ping frames (RFC 6455), answered by the server's stack
    MESSAGE = "message"  # an application-level JSON ping the exchange answers with a pong


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one WebSocket message turned out to be.

    `trades` holds validated `Trade` structs (kind `trades`); `ack`, `pong` are control
    messages; `error` is the exchange refusing something (logged); `unknown` is a
    well-formed message of a kind the adapter does not handle (counted and skipped).
    """

    kind: MessageKind
    trades: list[Any] = field(default_factory=list)
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RestRequest:
    """A GET to the exchange's REST API: path below the REST base URL, query parameters."""

    path: str
    params: dict[str, str | int]
    weight: int = 1  # tokens taken from the adapter's REST rate-limit bucket


class ExchangeAdapter:
    """One exchange's wire format. Subclasses set the class attributes and the methods."""

    id: ClassVar[str]
    ws_url: ClassVar[str]  # public WebSocket endpoint, production
    rest_url: ClassVar[str]  # public REST base URL, production
    max_symbols_per_connection: ClassVar[int]
    max_symbols_per_subscribe: ClassVar[int]  # symbols in one subscribe message
    ping_style: ClassVar[PingStyle]
    ping_interval: ClassVar[float]  # seconds between pings
    sequential_trade_ids: ClassVar[bool]  # ids are consecutive integers per symbol
    backfill_direction: ClassVar[Literal["forward", "backward"]] = "forward"
    backfill_page_size: ClassVar[int] = 1000
    rest_rate_per_second: ClassVar[float]  # REST tokens refilled per second
    rest_burst: ClassVar[int]  # REST tokens available at once

    def __init__(self, symbols: Iterable[str]) -> None:
        self.symbols = SymbolMap(self.id, symbols, self.exchange_symbol)

    # ---- symbols -----------------------------------------------------------------

    @staticmethod
    def exchange_symbol(base: str, quote: str) -> str:
        """The exchange's spelling of BASE-QUOTE (default: `BASEQUOTE`)."""
        return f"{base}{quote}"

    # ---- subscribing and keeping alive -------------------------------------------

    def ws_endpoint(self, ws_url: str, symbols: Sequence[str]) -> str:
        """The URL to open for `symbols` (default: the base URL; subscriptions follow)."""
        return ws_url

    def subscribe_messages(self, symbols: Sequence[str]) -> list[str]:
        """Subscribe messages for one connection's symbols, within the per-message limit."""
        size = self.max_symbols_per_subscribe
        return [
            self.subscribe_message(symbols[start : start + size], request_id=index + 1)
            for index, start in enumerate(range(0, len(symbols), size))
        ]

    def subscribe_message(self, symbols: Sequence[str], request_id: int) -> str:
        """One subscribe message for trades of `symbols` (normalized)."""
        raise NotImplementedError

    def ping_message(self) -> str | None:
        """The application-level ping (only for `PingStyle.MESSAGE`)."""
        return None

    # ---- messages ------------------------------------------------------------------

    def parse(self, raw: bytes | str, received_ts: int) -> Parsed:
        """Classify one message; trades become validated `Trade` structs.

        Raises `MalformedMessageError` (or `UnknownSymbolError`) for input that must go
        to the dead-letter topic.
        """
        message = self.decode_json(raw)
        if not isinstance(message, dict):  # no exchange documents any other kind
            return Parsed("unknown", detail="not a JSON object")
        return self.parse_object(message, received_ts)

    def parse_object(self, message: dict[str, Any], received_ts: int) -> Parsed:
        """Classify one message already decoded to a JSON object (what `parse` hands on)."""
        raise NotImplementedError

    def sequence(self, trade: Any) -> int:
        """The trade's position in its symbol's id sequence (sequential exchanges)."""
        return int(trade.trade_id)

    # ---- REST backfill ---------------------------------------------------------------

    def backfill_request(
        self, symbol: str, first_id: int, last_id: int, *, after_ms: int = 0
    ) -> RestRequest | None:
        """A page of trades with ids in [first_id, last_id] (sequential exchanges).

        `after_ms` is the time of the newest trade known before `first_id`, for APIs
        that page by time rather than by id (Kraken). `backfill_direction` says which
        end the next page continues from; None means the exchange offers no way to
        fetch by id.
        """
        return None

    def recent_trades_request(self, symbol: str) -> RestRequest | None:
        """The newest trades of `symbol`, to fill an outage by time (None: not offered)."""
        return None

    def parse_backfill(self, symbol: str, body: bytes, received_ts: int) -> list[Any]:
        """Trades of a REST answer to `backfill_request` or `recent_trades_request`."""
        raise NotImplementedError

    # ---- helpers for subclasses -------------------------------------------------------

    def decode_json(self, raw: bytes | str) -> Any:
        """Parsed JSON, or `MalformedMessageError` with the decoder's reason."""
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise MalformedMessageError(self.id, f"not valid JSON: {exc}") from exc

    def page_limit(self, first_id: int, last_id: int) -> int:
        """Rows to ask for ids in [first_id, last_id]: no more than the gap, nor a page."""
        return min(self.backfill_page_size, last_id - first_id + 1)

    @contextmanager
    def reading_trade(self, what: str = "trade") -> Iterator[None]:
        """While reading `what`, a missing or bad wire field is a `MalformedMessageError`.

        Adapters read fields directly (`float(row["p"])`, `SIDES[row["S"]]`), so what a
        broken message raises is a `KeyError`, `TypeError` or `ValueError`; it is worded
        here once for every adapter and every REST answer.
        """
        try:
            yield
        except KeyError as exc:  # a missing field, or a side not in the adapter's table
            raise MalformedMessageError(self.id, f"{what} without field or side {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(self.id, f"{what} with a bad value: {exc}") from exc

    def build_trade(self, **fields: Any) -> Any:
        """A validated `Trade` struct; a value the contract refuses is a malformed message."""
        try:
            return TRADE_CODEC.build(exchange=self.id, **fields)
        except SchemaError as exc:
            raise MalformedMessageError(self.id, str(exc)) from exc
