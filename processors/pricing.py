"""USD prices of on-chain tokens from sigflow's own market stream: pure, no Kafka.

`token_prices.toml` (setting `SIGFLOW_TOKEN_PRICES`) maps a token symbol to the asset
whose markets price it (WETH -> ETH, WBTC -> BTC) or to a fixed USD price (stablecoins).
A market `BASE-QUOTE` prices asset BASE when QUOTE is a USD quote (preferred) or a
stablecoin quote taken at par (USDT, USDC).

`PriceBook` holds the recent closes of every such market (one partition's copy, see
`onchain_stream.py`) and answers "the price of asset A at event time T": for each market
of A its latest close at or before T, not older than `max_age_ms`; of those, a USD quote
beats a par quote, then the most recent wins, then the market name (so ties are
deterministic). A close is the last trade before the candle's `close_time`, so the
time of a close is its candle's `close_time`.

The book also keeps each asset's watermark, the newest close time seen across its
markets: a transfer at T is priced once the watermark passed T + `lateness_ms`, by when
every market's close at or before T has arrived unless a market lags its peers by more
than that (the same bounded-lateness bargain as the candles').
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from processors.exceptions import TokenPricesError
from processors.rules_files import packaged_rules, parse_toml, read_rules

DEFAULT_PRICES_RESOURCE = "token_prices.toml"
AssetName = str


class PricingRules(BaseModel):
    """The `[pricing]` section."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval: str = Field(pattern=r"^[0-9]+[smhd]$")
    usd_quotes: tuple[str, ...] = Field(min_length=1)
    par_quotes: tuple[str, ...]
    max_age_ms: int = Field(gt=0)
    lateness_ms: int = Field(ge=0)
    max_wait_ms: int = Field(ge=0)
    history: int = Field(ge=1, le=100_000)


class TokenPrices(BaseModel):
    """The whole pricing file: rules, token -> asset, token -> fixed USD price."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pricing: PricingRules
    assets: dict[str, str]
    fixed_usd: dict[str, float]

    @field_validator("assets", "fixed_usd", mode="before")
    @classmethod
    def _upper_keys(cls, value: Any) -> Any:
        return {str(k).upper(): v for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("assets")
    @classmethod
    def _asset_names(cls, value: dict[str, str]) -> dict[str, str]:
        for token, asset in value.items():
            if not asset.isalnum() or asset != asset.upper():
                raise ValueError(f"asset {asset!r} of token {token} is not an upper-case symbol")
        return value

    @field_validator("fixed_usd")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for token, price in value.items():
            if not price > 0:
                raise ValueError(f"fixed USD price of {token} must be > 0, got {price}")
        return value

    @model_validator(mode="after")
    def _one_way(self) -> TokenPrices:
        both = sorted(set(self.assets) & set(self.fixed_usd))
        if both:
            raise ValueError(f"tokens both in [assets] and [fixed_usd]: {', '.join(both)}")
        return self

    def market_rank(self, symbol: str) -> tuple[AssetName, int] | None:
        """(asset, rank) of a `BASE-QUOTE` market that prices a mapped asset: rank 0 for a
        USD quote, 1 for a par quote; None for any other market."""
        base, _, quote = symbol.partition("-")
        if base not in self.priced_assets:
            return None
        if quote in self.pricing.usd_quotes:
            return base, 0
        if quote in self.pricing.par_quotes:
            return base, 1
        return None

    @property
    def priced_assets(self) -> frozenset[str]:
        return frozenset(self.assets.values())


def _merge(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Sections of the user's file replace [pricing] fields one by one, and the token
    tables as a whole (a user listing their tokens means exactly those)."""
    merged = dict(defaults)
    for name, value in overrides.items():
        if name == "pricing" and isinstance(value, dict):
            merged[name] = {**defaults.get(name, {}), **value}
        else:
            merged[name] = value
    return merged


def _default_document() -> dict[str, Any]:
    default = packaged_rules(DEFAULT_PRICES_RESOURCE)
    return parse_toml(default.text, source=default.source, error=TokenPricesError)


def parse_token_prices(text: str, *, source: str = "<string>") -> TokenPrices:
    """The pricing file's text, completed with the packaged defaults."""
    document = parse_toml(text, source=source, error=TokenPricesError)
    try:
        return TokenPrices.model_validate(_merge(_default_document(), document))
    except ValidationError as exc:
        reasons = "; ".join(
            ".".join(str(part) for part in error["loc"])
            + ": "
            + str(error["msg"]).removeprefix("Value error, ")
            for error in exc.errors()
        )
        raise TokenPricesError(f"{source}: {reasons}") from exc


def load_token_prices(path: Path | None = None) -> TokenPrices:
    """The pricing file at `path`, or the packaged defaults when None."""
    file = read_rules(
        path, default=DEFAULT_PRICES_RESOURCE, error=TokenPricesError, what="token pricing"
    )
    return parse_token_prices(file.text, source=file.source)


@dataclass(frozen=True, slots=True)
class Quote:
    """A USD price and where it came from."""

    price: float
    exchange: str | None  # None for a fixed price
    symbol: str | None
    time: int | None  # close time of the candle, None for a fixed price


class PriceBook:
    """Recent closes per market and the watermark per asset (JSON state for a table)."""

    def __init__(self, config: TokenPrices, state: dict[str, Any] | None = None) -> None:
        self.config = config
        state = state or {}
        # "exchange:symbol" -> [[close_time, price], ...] ascending by time
        self.markets: dict[str, list[list[Any]]] = {
            market: [list(point) for point in points]
            for market, points in state.get("markets", {}).items()
        }
        self.watermarks: dict[str, int] = dict(state.get("watermarks", {}))

    def add(self, exchange: str, symbol: str, time: int, price: float) -> bool:
        """Fold in one close; False when the market prices no mapped asset (ignored)."""
        ranked = self.config.market_rank(symbol)
        if ranked is None:
            return False
        asset = ranked[0]
        points = self.markets.setdefault(f"{exchange}:{symbol}", [])
        times = [point[0] for point in points]
        at = bisect_right(times, time)
        if at and times[at - 1] == time:
            points[at - 1][1] = price  # a re-read: the same close again
        else:
            insort(points, [time, price], key=lambda point: point[0])
        del points[: max(0, len(points) - self.config.pricing.history)]
        self.watermarks[asset] = max(time, self.watermarks.get(asset, time))
        return True

    def ready(self, asset: str, ts: int) -> bool:
        """Whether every close of `asset` at or before `ts` is expected to be here."""
        watermark = self.watermarks.get(asset)
        return watermark is not None and watermark - self.config.pricing.lateness_ms >= ts

    def quote(self, asset: str, ts: int) -> Quote | None:
        """The price of `asset` at event time `ts` (see the module doc), None if unknown."""
        best: tuple[tuple[int, int, str], Quote] | None = None
        max_age = self.config.pricing.max_age_ms
        for market, points in self.markets.items():
            exchange, _, symbol = market.partition(":")
            ranked = self.config.market_rank(symbol)
            if ranked is None or ranked[0] != asset:
                continue
            at = bisect_right(points, ts, key=lambda point: point[0])
            if not at:
                continue
            time, price = points[at - 1]
            if ts - time > max_age:
                continue
            order = (ranked[1], -time, market)
            if best is None or order < best[0]:
                best = (order, Quote(price, exchange, symbol, time))
        return None if best is None else best[1]

    def to_dict(self) -> dict[str, Any]:
        return {"markets": self.markets, "watermarks": self.watermarks}
