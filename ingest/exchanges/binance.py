"""Binance spot: raw `<symbol>@trade` streams, backfill by trade id over REST.

Wire format (https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams,
fixtures in tests/fixtures/exchanges/binance/):

- connect to `wss://stream.binance.com:9443/ws`, then
  `{"method": "SUBSCRIBE", "params": ["btcusdt@trade"], "id": 1}` → `{"result": null, "id": 1}`;
  a refused request answers `{"error": {"code": 2, "msg": "..."}, "id": 1}`.
- trade: `{"e": "trade", "E": event ms, "s": "BNBBTC", "t": trade id, "p": "0.001",
  "q": "100", "T": trade ms, "m": buyer is the maker, "M": ignore}`; combined streams
  wrap it as `{"stream": ..., "data": {...}}`; errors are documented as `{"code": 2,
  "msg": "..."}`.
- the server sends a ping frame every 20 s and drops a connection that does not pong
  within a minute; one connection carries up to 1024 streams and lives 24 h.
- trade ids `t` are consecutive per symbol, so a jump is a gap, filled with
  `GET /api/v3/historicalTrades?symbol=&fromId=&limit=` (weight 25, max 1000 rows, no
  API key) from the REST API, whose IP limit is 6000 request weight per minute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import orjson

from ingest.exchanges.base import ExchangeAdapter, Parsed, PingStyle, RestRequest
from ingest.exchanges.exceptions import MalformedMessageError

HISTORICAL_TRADES_WEIGHT = 25


class Binance(ExchangeAdapter):
    """Binance spot trades (`@trade` streams; `t` is sequential per symbol)."""

    id: ClassVar[str] = "binance"
    ws_url: ClassVar[str] = "wss://stream.binance.com:9443"
    rest_url: ClassVar[str] = "https://api.binance.com"
    max_symbols_per_connection: ClassVar[int] = 1024  # documented stream limit
    max_symbols_per_subscribe: ClassVar[int] = 200  # keeps one request frame small
    ping_style: ClassVar[PingStyle] = PingStyle.FRAME
    ping_interval: ClassVar[float] = 20.0
    sequential_trade_ids: ClassVar[bool] = True
    backfill_page_size: ClassVar[int] = 1000
    rest_rate_per_second: ClassVar[float] = 100.0  # 6000 weight per minute
    rest_burst: ClassVar[int] = 1000

    def ws_endpoint(self, ws_url: str, symbols: Sequence[str]) -> str:
        return ws_url.rstrip("/") + "/ws"

    def subscribe_message(self, symbols: Sequence[str], request_id: int) -> str:
        streams = [f"{self.symbols.to_exchange(symbol).lower()}@trade" for symbol in symbols]
        return orjson.dumps({"method": "SUBSCRIBE", "params": streams, "id": request_id}).decode()

    def parse_object(self, message: dict[str, Any], received_ts: int) -> Parsed:
        if "data" in message and "stream" in message:
            message = message["data"]
            if not isinstance(message, dict):
                raise MalformedMessageError(self.id, "combined stream `data` is not an object")
        event = message.get("e")
        if event == "trade":
            return Parsed("trades", [self._trade(message, received_ts)])
        if event is None:
            if "error" in message:  # what the server sends: {"error": {code, msg}, "id"}
                return Parsed("error", detail=str(message["error"]))
            if "code" in message and "msg" in message:  # the documented table's form
                return Parsed("error", detail=f"{message['code']}: {message['msg']}")
            if "result" in message and "id" in message:
                return Parsed("ack", detail=f"request {message['id']}")
        return Parsed("unknown", detail=str(event or sorted(message)[:5]))

    def _trade(self, message: dict[str, Any], received_ts: int) -> Any:
        with self.reading_trade():
            return self.build_trade(
                symbol=self.symbols.to_normalized(message["s"]),
                trade_id=str(int(message["t"])),
                price=float(message["p"]),
                size=float(message["q"]),
                side="sell" if _flag(message["m"]) else "buy",
                ts=int(message["T"]),
                received_ts=received_ts,
            )

    def backfill_request(
        self, symbol: str, first_id: int, last_id: int, *, after_ms: int = 0
    ) -> RestRequest:
        return RestRequest(
            "/api/v3/historicalTrades",
            {
                "symbol": self.symbols.to_exchange(symbol),
                "fromId": first_id,
                "limit": self.page_limit(first_id, last_id),
            },
            weight=HISTORICAL_TRADES_WEIGHT,
        )

    def parse_backfill(self, symbol: str, body: bytes, received_ts: int) -> list[Any]:
        rows = self.decode_json(body)
        if not isinstance(rows, list):
            raise MalformedMessageError(self.id, f"historicalTrades answered {str(rows)[:200]}")
        with self.reading_trade("historical trade"):
            return [
                self.build_trade(
                    symbol=symbol,
                    trade_id=str(int(row["id"])),
                    price=float(row["price"]),
                    size=float(row["qty"]),
                    side="sell" if _flag(row["isBuyerMaker"]) else "buy",
                    ts=int(row["time"]),
                    received_ts=received_ts,
                )
                for row in rows
            ]


def _flag(value: object) -> bool:
    """A JSON boolean; anything else is a malformed message, not a silent `False`."""
    if not isinstance(value, bool):
        raise TypeError(f"expected true/false, got {value!r}")
    return value
