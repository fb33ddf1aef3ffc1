"""Errors of the exchange feeds.

    IngestError                      (ingest.exceptions)
    └── ExchangeError                an exchange feed cannot do what was asked
        ├── UnknownExchangeError     an exchange id that is not in `EXCHANGE_MAP`
        ├── UnknownSymbolError       a symbol that is not `BASE-QUOTE` or not subscribed
        ├── MalformedMessageError    a message that cannot be read (goes to `dlq`)
        └── BackfillError            the REST API did not give the missing trades

`UnknownExchangeError` and a bad `BASE-QUOTE` symbol are configuration errors (exit 2);
`MalformedMessageError` and `UnknownSymbolError` raised while parsing a message never stop
a feed: the connection sends the raw bytes to `dlq` with the reason and goes on.
"""

from __future__ import annotations

from ingest.exceptions import IngestError


class ExchangeError(IngestError):
    """An exchange feed cannot do what was asked."""


class UnknownExchangeError(ExchangeError):
    """An exchange id that no adapter implements."""

    exit_code = 2


class UnknownSymbolError(ExchangeError):
    """A symbol that is not `BASE-QUOTE`, or an exchange symbol nobody subscribed to."""

    exit_code = 2

    def __init__(self, exchange: str, symbol: str, reason: str) -> None:
        super().__init__(f"{exchange}: symbol {symbol!r}: {reason}")
        self.exchange = exchange
        self.symbol = symbol


class MalformedMessageError(ExchangeError):
    """A message the adapter recognises as broken: bad JSON, missing or invalid fields."""

    def __init__(self, exchange: str, reason: str) -> None:
        super().__init__(f"{exchange}: {reason}")
        self.exchange = exchange
        self.reason = reason


class BackfillError(ExchangeError):
    """The exchange's REST API refused or failed to return trades (after retries)."""
