"""Bybit v5 spot: `publicTrade.<SYMBOL>` topics; outages filled by time over REST.

Wire format (https://bybit-exchange.github.io/docs/v5/ws/connect and
https://bybit-exchange.github.io/docs/v5/websocket/public/trade, fixtures in
tests/fixtures/exchanges/bybit/):

- connect to `wss://stream.bybit.com/v5/public/spot`, send
  `{"op": "subscribe", "args": ["publicTrade.BTCUSDT"], "req_id": "1"}` (spot takes at
  most 10 args per request) → `{"success": true, "ret_msg": "", "conn_id": "...",
  "req_id": "1", "op": "subscribe"}`; a refusal has `"success": false`.
- keep alive with `{"op": "ping"}` every 20 s → spot answers
  `{"success": true, "ret_msg": "pong", ..., "op": "ping"}` (derivatives `{"op": "pong"}`).
- trades: `{"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": ms, "data": [{"T":
  trade ms, "s": "BTCUSDT", "S": "Buy"|"Sell" (taker), "v": size, "p": price, "i": trade
  id, "BT": block trade, ...}]}`, up to 1024 trades per message.
- trade ids are not consecutive, so a lost stretch cannot be found by id: the feed
  records the outage window and fills it from `GET /v5/market/recent-trade?category=spot
  &symbol=&limit=60` (the newest 60 trades, spot's maximum), keeping those inside the
  window that it has not published (its `execId` is the stream's trade id `i`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from ingest.exchanges.base import ExchangeAdapter, Parsed, PingStyle, RestRequest
from ingest.exchanges.exceptions import BackfillError, MalformedMessageError

TOPIC = "publicTrade."
RECENT_TRADES_LIMIT = 60  # spot maximum of /v5/market/recent-trade
SIDES = {"Buy": "buy", "Sell": "sell"}


class Bybit(ExchangeAdapter):
    """Bybit v5 spot public trades (ids are not sequential: outages are recorded)."""

    id: ClassVar[str] = "bybit"
    ws_url: ClassVar[str] = "wss://stream.bybit.com/v5/public/spot"
    rest_url: ClassVar[str] = "https://api.bybit.com"
    max_symbols_per_connection: ClassVar[int] = 200  # keeps args well under 21,000 chars
    max_symbols_per_subscribe: ClassVar[int] = 10  # documented spot limit per request
    ping_style: ClassVar[PingStyle] = PingStyle.MESSAGE
    ping_interval: ClassVar[float] = 20.0
    sequential_trade_ids: ClassVar[bool] = False
    rest_rate_per_second: ClassVar[float] = 10.0  # far below 600 requests / 5 s per IP
    rest_burst: ClassVar[int] = 10

    def subscribe_message(self, symbols: Sequence[str], request_id: int) -> str:
        topics = [TOPIC + self.symbols.to_exchange(symbol) for symbol in symbols]
        return orjson.dumps({"op": "subscribe", "args": topics, "req_id": str(request_id)}).decode()

    def ping_message(self) -> str:
        return '{"op":"ping","req_id":"sigflow"}'

    def parse_object(self, message: dict[str, Any], received_ts: int) -> Parsed:
        topic = message.get("topic")
        if isinstance(topic, str):
            if topic.startswith(TOPIC):
                return Parsed("trades", self._trades(message, received_ts))
            return Parsed("unknown", detail=topic)
        op = message.get("op")
        if op == "pong" or (op == "ping" and message.get("ret_msg") == "pong"):
            return Parsed("pong")
        if op == "subscribe":
            if message.get("success") is True:
                return Parsed("ack", detail=f"request {message.get('req_id')}")
            return Parsed("error", detail=str(message.get("ret_msg")))
        return Parsed("unknown", detail=str(op or sorted(message)[:5]))

    def _trades(self, message: dict[str, Any], received_ts: int) -> list[Any]:
        data = message.get("data")
        if not isinstance(data, list):
            raise MalformedMessageError(self.id, "publicTrade message without a `data` list")
        with self.reading_trade():
            return [
                self.build_trade(
                    symbol=self.symbols.to_normalized(row["s"]),
                    trade_id=_text(row["i"]),
                    price=float(row["p"]),
                    size=float(row["v"]),
                    side=SIDES[row["S"]],
                    ts=int(row["T"]),
                    received_ts=received_ts,
                )
                for row in data
            ]

    def recent_trades_request(self, symbol: str) -> RestRequest:
        return RestRequest(
            "/v5/market/recent-trade",
            {
                "category": "spot",
                "symbol": self.symbols.to_exchange(symbol),
                "limit": RECENT_TRADES_LIMIT,
            },
        )

    def parse_backfill(self, symbol: str, body: bytes, received_ts: int) -> list[Any]:
        answer = self.decode_json(body)
        if not isinstance(answer, dict):
            raise MalformedMessageError(self.id, "recent-trade answer is not an object")
        if answer.get("retCode") != 0:
            raise BackfillError(
                f"bybit recent-trade refused: {answer.get('retCode')} {answer.get('retMsg')}"
            )
        with self.reading_trade("recent-trade row"):
            trades = [
                self.build_trade(
                    symbol=symbol,
                    trade_id=_text(row["execId"]),
                    price=float(row["price"]),
                    size=float(row["size"]),
                    side=SIDES[row["side"]],
                    ts=int(row["time"]),
                    received_ts=received_ts,
                )
                for row in answer["result"]["list"]
            ]
        return sorted(trades, key=lambda trade: trade.ts)  # the API answers newest first


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected a non-empty string id, got {value!r}")
    return value
