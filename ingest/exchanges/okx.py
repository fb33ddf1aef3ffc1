"""OKX v5 spot: the public `trades-all` channel; id gaps backfilled by trade id over REST.

Wire format (https://www.okx.com/docs-v5/en/#overview-websocket and the "All trades
channel", "Trades channel" and "Get trades history" sections; fixtures in
tests/fixtures/exchanges/okx/):

- connect to `wss://ws.okx.com:8443/ws/v5/business` (where `trades-all` is served, no
  login), send `{"op": "subscribe", "args": [{"channel": "trades-all", "instId":
  "BTC-USDT"}]}` → one `{"event": "subscribe", "arg": {...}, "connId": ...}` per arg; a
  refusal is `{"event": "error", "code": "60012", "msg": "..."}`.
- trades: `{"arg": {"channel": "trades-all", "instId": ...}, "data": [{"instId",
  "tradeId", "px", "sz", "side" (taker), "source", "ts": ms}]}`, one trade per push.
  Not the `trades` channel: it aggregates the fills of one taker order at one price into
  a single push (`count` > 1, `tradeId` the last of them), so its ids skip and its rows are
  not single trades; a `trades` push is counted as unknown here.
- keep-alive: OKX closes a connection that is silent for 30 s; the client sends the text
  `ping` every 20 s and the server answers the text `pong`.
- `tradeId` is consecutive per instrument, so a jump is a gap, filled backwards with
  `GET /api/v5/market/history-trades?instId=&type=1&after=<id>&limit=100` (`type=1`
  pages by trade id, `after` returns older ids, at most 100 rows; 20 requests / 2 s per IP).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import orjson

from ingest.exchanges.base import ExchangeAdapter, Parsed, PingStyle, RestRequest
from ingest.exchanges.exceptions import BackfillError, MalformedMessageError

CHANNEL = "trades-all"
SIDES = {"buy": "buy", "sell": "sell"}
HISTORY_PAGE = 100  # documented maximum of history-trades
PONG = b"pong"


class Okx(ExchangeAdapter):
    """OKX spot trades, one per push (`tradeId` is sequential per instrument)."""

    id: ClassVar[str] = "okx"
    ws_url: ClassVar[str] = "wss://ws.okx.com:8443/ws/v5/business"
    rest_url: ClassVar[str] = "https://www.okx.com"
    max_symbols_per_connection: ClassVar[int] = 200  # no documented limit: kept modest
    max_symbols_per_subscribe: ClassVar[int] = 50  # args stay far below 64 kB a request
    ping_style: ClassVar[PingStyle] = PingStyle.MESSAGE
    ping_interval: ClassVar[float] = 20.0
    sequential_trade_ids: ClassVar[bool] = True
    backfill_direction: ClassVar[Literal["forward", "backward"]] = "backward"
    backfill_page_size: ClassVar[int] = HISTORY_PAGE
    rest_rate_per_second: ClassVar[float] = 5.0  # half of 20 requests / 2 s
    rest_burst: ClassVar[int] = 5

    @staticmethod
    def exchange_symbol(base: str, quote: str) -> str:
        return f"{base}-{quote}"

    def subscribe_message(self, symbols: Sequence[str], request_id: int) -> str:
        args = [
            {"channel": CHANNEL, "instId": self.symbols.to_exchange(symbol)} for symbol in symbols
        ]
        return orjson.dumps({"op": "subscribe", "args": args}).decode()

    def ping_message(self) -> str:
        return "ping"  # plain text, not JSON, as OKX documents it

    def parse(self, raw: bytes | str, received_ts: int) -> Parsed:
        if (raw.encode() if isinstance(raw, str) else raw) == PONG:
            return Parsed("pong")  # plain text, not JSON: answered before decoding
        return super().parse(raw, received_ts)

    def parse_object(self, message: dict[str, Any], received_ts: int) -> Parsed:
        event = message.get("event")
        if event == "subscribe":
            return Parsed("ack", detail=str(message.get("arg")))
        if event == "error":
            return Parsed("error", detail=f"{message.get('code')}: {message.get('msg')}")
        arg = message.get("arg")
        channel = arg.get("channel") if isinstance(arg, dict) else None
        if event is None and channel == CHANNEL:
            return Parsed("trades", self._trades(message.get("data"), received_ts))
        return Parsed("unknown", detail=str(event or channel or sorted(message)[:5]))

    def _trades(self, data: Any, received_ts: int) -> list[Any]:
        if not isinstance(data, list):
            raise MalformedMessageError(self.id, "trades-all push without a `data` list")
        return [self._trade(row, self.symbols.to_normalized, received_ts) for row in data]

    def _trade(self, row: Any, symbol_of: Callable[[str], str], received_ts: int) -> Any:
        with self.reading_trade():
            return self.build_trade(
                symbol=symbol_of(row["instId"]),
                trade_id=str(_digits(row["tradeId"])),
                price=float(row["px"]),
                size=float(row["sz"]),
                side=SIDES[row["side"]],
                ts=_digits(row["ts"]),
                received_ts=received_ts,
            )

    def backfill_request(
        self, symbol: str, first_id: int, last_id: int, *, after_ms: int = 0
    ) -> RestRequest:
        return RestRequest(
            "/api/v5/market/history-trades",
            {
                "instId": self.symbols.to_exchange(symbol),
                "type": "1",
                "after": last_id + 1,  # older than this id: the page ends at `last_id`
                "limit": self.page_limit(first_id, last_id),
            },
        )

    def parse_backfill(self, symbol: str, body: bytes, received_ts: int) -> list[Any]:
        answer = self.decode_json(body)
        if not isinstance(answer, dict):
            raise MalformedMessageError(self.id, "history-trades answer is not an object")
        if answer.get("code") != "0":
            raise BackfillError(
                f"okx history-trades refused: {answer.get('code')} {answer.get('msg')}"
            )
        rows = answer.get("data")
        if not isinstance(rows, list):
            raise MalformedMessageError(self.id, "history-trades answer without `data`")
        trades = [self._trade(row, lambda _inst_id: symbol, received_ts) for row in rows]
        return sorted(trades, key=self.sequence)  # the API answers newest first


def _digits(value: object) -> int:
    """OKX sends ids and times as decimal strings."""
    if not isinstance(value, str) or not value.isdigit():
        raise ValueError(f"expected a decimal string, got {value!r}")
    return int(value)
