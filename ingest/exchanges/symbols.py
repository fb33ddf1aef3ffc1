"""Symbol normalization: sigflow's `BASE-QUOTE` and each exchange's own spelling.

An exchange symbol such as Binance's `BTCUSDT` cannot be split into base and quote
without the exchange's instrument list; instead each feed knows the symbols it
subscribed to, so the map is built from them and anything else is an unknown symbol.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from ingest.exchanges.exceptions import UnknownSymbolError

NORMALIZED = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+$")


def split_symbol(exchange: str, symbol: str) -> tuple[str, str]:
    """(base, quote) of a normalized `BASE-QUOTE` symbol; anything else is refused."""
    if NORMALIZED.match(symbol) is None:
        raise UnknownSymbolError(exchange, symbol, "expected BASE-QUOTE, e.g. BTC-USDT")
    base, quote = symbol.split("-")
    return base, quote


class SymbolMap:
    """Both directions between normalized symbols and one exchange's spelling."""

    def __init__(
        self, exchange: str, symbols: Iterable[str], to_exchange: Callable[[str, str], str]
    ) -> None:
        self.exchange = exchange
        self._to_exchange: dict[str, str] = {}
        for symbol in symbols:
            base, quote = split_symbol(exchange, symbol)
            self._to_exchange[symbol] = to_exchange(base, quote)
        self._to_normalized = {native: symbol for symbol, native in self._to_exchange.items()}

    @property
    def normalized(self) -> list[str]:
        """The subscribed symbols, as given."""
        return list(self._to_exchange)

    def to_exchange(self, symbol: str) -> str:
        """`BTC-USDT` → the exchange's spelling (e.g. `BTCUSDT`)."""
        try:
            return self._to_exchange[symbol]
        except KeyError:
            raise UnknownSymbolError(self.exchange, symbol, "not subscribed") from None

    def to_normalized(self, native: str) -> str:
        """The exchange's spelling → `BASE-QUOTE`; a symbol nobody subscribed to is refused."""
        try:
            return self._to_normalized[native]
        except KeyError:
            raise UnknownSymbolError(self.exchange, native, "not a subscribed symbol") from None
