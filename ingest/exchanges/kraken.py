"""Kraken spot, WebSocket v2: the `trade` channel; id gaps backfilled over REST by time.

Wire format (https://docs.kraken.com/api/docs/websocket-v2/trade, .../websocket-v2/ping,
.../websocket-v2/heartbeat, .../websocket-v2/status and
https://docs.kraken.com/api/docs/rest-api/get-recent-trades; fixtures in
tests/fixtures/exchanges/kraken/):

- connect to `wss://ws.kraken.com/v2`; the server greets with a `status` message, then
  `{"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"],
  "snapshot": false}, "req_id": 1}` → one `{"method": "subscribe", "result": {...,
  "symbol": "BTC/USD"}, "success": true, ...}` per symbol; a refusal has `"success": false`
  and an `error` text.
- trades: `{"channel": "trade", "type": "snapshot"|"update", "data": [{"symbol": "BTC/USD",
  "side": "buy"|"sell" (taker), "price": number, "qty": number, "ord_type", "trade_id":
  integer, "timestamp": RFC 3339}]}`; v2 spells Bitcoin `BTC` (v1 and REST: `XBT`).
- keep-alive: once subscribed the server sends `{"channel": "heartbeat"}` about every
  second; the client also sends `{"method": "ping"}` (answered by `{"method": "pong"}`).
- `trade_id` is a sequence number per book, so a jump is a gap, filled with
  `GET /0/public/Trades?pair=XBTUSD&since=<ns>&count=1000`: `since` is a time cursor in
  nanoseconds (exclusive), so the feed passes the time of the last trade it published
  and keeps the ids of the gap. Rows are `[price, volume, time, "b"|"s", "m"|"l", misc,
  trade_id]` (the id is the 7th element in the current API). Kraken's public REST limit
  is about one call per second per IP, and it reports throttling in the body
  (`EGeneral:Too many requests`), which is a failed backfill here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from ingest.exchanges.base import ExchangeAdapter, Parsed, PingStyle, RestRequest
from ingest.exchanges.exceptions import BackfillError, MalformedMessageError
from ingest.exchanges.timestamps import rfc3339_to_ms, seconds_to_ms

CHANNEL = "trade"
SIDES = {"buy": "buy", "sell": "sell"}
REST_SIDES = {"b": "buy", "s": "sell"}
REST_ASSETS = {"BTC": "XBT", "DOGE": "XDG"}  # the REST API's older names
TRADES_PER_PAGE = 1000


class Kraken(ExchangeAdapter):
    """Kraken spot trades over WebSocket v2 (`trade_id` is sequential per book)."""

    id: ClassVar[str] = "kraken"
    ws_url: ClassVar[str] = "wss://ws.kraken.com/v2"
    rest_url: ClassVar[str] = "https://api.kraken.com"
    max_symbols_per_connection: ClassVar[int] = 200  # no documented limit: kept modest
    max_symbols_per_subscribe: ClassVar[int] = 50
    ping_style: ClassVar[PingStyle] = PingStyle.MESSAGE
    ping_interval: ClassVar[float] = 20.0
    sequential_trade_ids: ClassVar[bool] = True
    backfill_page_size: ClassVar[int] = TRADES_PER_PAGE
    rest_rate_per_second: ClassVar[float] = 0.5  # below the ~1 call/s public allowance
    rest_burst: ClassVar[int] = 3

    @staticmethod
    def exchange_symbol(base: str, quote: str) -> str:
        return f"{base}/{quote}"

    @staticmethod
    def rest_pair(symbol: str) -> str:
        """`BTC-USD` → `XBTUSD`, the REST API's pair name."""
        base, quote = symbol.split("-")
        return REST_ASSETS.get(base, base) + REST_ASSETS.get(quote, quote)

    def subscribe_message(self, symbols: Sequence[str], request_id: int) -> str:
        natives = [self.symbols.to_exchange(symbol) for symbol in symbols]
        params = {"channel": CHANNEL, "symbol": natives, "snapshot": False}
        return orjson.dumps(
            {"method": "subscribe", "params": params, "req_id": request_id}
        ).decode()

    def ping_message(self) -> str:
        return '{"method":"ping"}'

    def parse_object(self, message: dict[str, Any], received_ts: int) -> Parsed:
        channel = message.get("channel")
        if channel == CHANNEL:
            return Parsed("trades", self._trades(message, received_ts))
        if channel == "heartbeat":
            return Parsed("pong")
        if channel == "status":
            return Parsed("ack", detail="connection status")
        method = message.get("method")
        if method == "pong":
            return Parsed("pong")
        if method == "subscribe":
            if message.get("success") is True:
                return Parsed("ack", detail=str(message.get("result")))
            return Parsed("error", detail=str(message.get("error")))
        if "error" in message:
            return Parsed("error", detail=str(message["error"]))
        return Parsed("unknown", detail=str(channel or method or sorted(message)[:5]))

    def _trades(self, message: dict[str, Any], received_ts: int) -> list[Any]:
        data = message.get("data")
        if not isinstance(data, list):
            raise MalformedMessageError(self.id, "trade message without a `data` list")
        with self.reading_trade():
            return [
                self.build_trade(
                    symbol=self.symbols.to_normalized(row["symbol"]),
                    trade_id=str(_integer(row["trade_id"])),
                    price=float(row["price"]),
                    size=float(row["qty"]),
                    side=SIDES[row["side"]],
                    ts=rfc3339_to_ms(row["timestamp"]),
                    received_ts=received_ts,
                )
                for row in data
            ]

    def backfill_request(
        self, symbol: str, first_id: int, last_id: int, *, after_ms: int = 0
    ) -> RestRequest | None:
        if after_ms <= 0:
            return None  # the API pages by time: without one it would start at the beginning
        return RestRequest(
            "/0/public/Trades",
            {
                "pair": self.rest_pair(symbol),
                "since": after_ms * 1_000_000 - 1,  # exclusive: keep that millisecond
                "count": TRADES_PER_PAGE,
            },
        )

    def parse_backfill(self, symbol: str, body: bytes, received_ts: int) -> list[Any]:
        answer = self.decode_json(body)
        if not isinstance(answer, dict):
            raise MalformedMessageError(self.id, "Trades answer is not an object")
        if answer.get("error"):
            raise BackfillError(f"kraken Trades refused: {answer['error']}")
        result = answer.get("result")
        books = [rows for key, rows in (result or {}).items() if key != "last"]
        if len(books) != 1 or not isinstance(books[0], list):
            raise MalformedMessageError(self.id, f"Trades answered {str(answer)[:200]}")
        with self.reading_trade("Trades row"):
            return [self._rest_trade(symbol, row, received_ts) for row in books[0]]

    def _rest_trade(self, symbol: str, row: Any, received_ts: int) -> Any:
        price, volume, seconds, side, _order_type, _misc, trade_id = row
        return self.build_trade(
            symbol=symbol,
            trade_id=str(_integer(trade_id)),
            price=float(price),
            size=float(volume),
            side=REST_SIDES[side],
            ts=seconds_to_ms(seconds),
            received_ts=received_ts,
        )


def _integer(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer trade id, got {value!r}")
    return value
