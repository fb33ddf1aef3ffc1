"""The dashboard in headless Chromium, on the whole pipeline fed with replayed trades.

Processor, sink and API run as real processes against real Kafka and the ClickHouse
engine. The page is loaded while trades are still arriving, and the test checks what a
person would see change: prices, a new candle, signals with their explanations and an
anomaly from the stream. The screenshot is kept under test-artifacts/.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from api.keys import ApiKeyStore
from ingest.producer import EventProducer
from schemas.codec import codec_for
from schemas.events import Anomaly, Trade
from sigflow.roles import migrate
from sigflow.settings import Settings
from sigflow.stack.process import free_port
from sinks.warehouse import connect
from tests.conftest import Roles
from tests.e2e.browser import ARTIFACTS, headless_chromium
from tests.e2e.pipeline import MINUTE, START, eventually, publish

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TRADE = codec_for(Trade)
ANOMALY = codec_for(Anomaly)
MINUTES = 80
SERIES = (
    ("coinbase", "BTC-USD", 37_000.0),
    ("kraken", "BTC-USD", 37_010.0),
    ("binance", "ETH-USDT", 2_000.0),
)


def waving_trades(
    series: tuple[tuple[str, str, float], ...] = SERIES,
    start: int = START,
    minutes: int = MINUTES,
    seed: int = 7,
) -> list[Any]:
    """Prices on a 24-minute wave (so EMAs and MACD cross), a trade every ~4 s."""
    rng = random.Random(seed)
    trades = []
    for exchange, symbol, base in series:
        ts = start
        for _ in range(minutes * 15):
            ts += rng.randint(3_000, 5_000)
            wave = math.sin(2 * math.pi * (ts - START) / (24 * MINUTE))
            price = round(base * (1 + 0.01 * wave + rng.gauss(0, 0.0004)), 2)
            trades.append(
                TRADE.build(
                    exchange=exchange,
                    symbol=symbol,
                    trade_id=str(ts),
                    price=price,
                    size=round(rng.uniform(0.01, 1.0), 4),
                    side=rng.choice(["buy", "sell"]),
                    ts=ts,
                    received_ts=ts + 3,
                )
            )
    return sorted(trades, key=lambda t: t.ts)


def wait_until(
    driver: WebDriver, what: str, check: Callable[[], bool], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if settled(check):
            return
        time.sleep(0.25)
    shot = ARTIFACTS / "dashboard-failed.png"
    driver.save_screenshot(str(shot))
    pytest.fail(f"dashboard never showed {what}; screenshot: {shot}", pytrace=False)


T = TypeVar("T")


def settled(read: Callable[[], T]) -> T:
    """`read()` once the page holds still for it: the live stream re-renders rows, so an
    element found a moment ago can be gone when its text is read; read again then."""
    for _ in range(20):
        try:
            return read()
        except StaleElementReferenceException:
            time.sleep(0.05)
    return read()


def price_texts(driver: WebDriver) -> dict[str, str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#prices tbody tr")
    return {row.get_attribute("data-symbol") or "": row.text for row in rows}


def candle_count(driver: WebDriver) -> int:
    return int(driver.find_element(By.ID, "candle-count").text.split()[0])


CHART_PIXELS = """
const canvases = [...document.querySelectorAll('#chart canvas')];
let coloured = 0;
for (const c of canvases) {
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if ((g > 140 && r < 100) || (r > 200 && g < 110)) coloured++;  // up/down candle bodies
  }
}
return coloured;
"""


async def test_dashboard_shows_live_prices_candles_signals_and_anomalies(
    pipeline_settings: Settings, roles: Roles
) -> None:
    settings = pipeline_settings.model_copy(update={"api_port": free_port()})
    roles.settings = settings
    trades = waving_trades()
    split = int(len(trades) * 0.85)
    await migrate(settings)
    client = await connect(settings)
    key = (await ApiKeyStore(client, settings.clickhouse_database).create("browser")).token
    await client.close()
    for role in ("sink", "process", "api"):
        roles.start(role)
    base = f"http://127.0.0.1:{settings.api_port}"
    await publish(settings, trades[:split])

    async def first_candles_served() -> bool:
        try:
            async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key}) as http:
                candles = await http.get(
                    "/v1/candles", params={"exchange": "coinbase", "symbol": "BTC-USD"}
                )
                signals = await http.get("/v1/signals")
        except httpx.TransportError:
            return False  # the API is still starting
        return len(candles.json()) > 30 and len(signals.json()) > 0

    await eventually(first_candles_served, "candles and signals through the API", roles)

    shot = ARTIFACTS / "dashboard.png"
    ARTIFACTS.mkdir(exist_ok=True)
    with headless_chromium() as driver:
        await asyncio.to_thread(driver.get, f"{base}/?api_key={key}")
        wait_until(
            driver, "the live status", lambda: driver.find_element(By.ID, "status").text == "live"
        )
        wait_until(
            driver, "price rows", lambda: {"BTC-USD", "ETH-USDT"} <= set(price_texts(driver))
        )
        wait_until(driver, "candles on the chart", lambda: candle_count(driver) > 30)
        before_prices = settled(lambda: price_texts(driver))
        before_candles = settled(lambda: candle_count(driver))

        # More trades arrive while the page is open: a person sees them land.
        await publish(settings, trades[split:])
        anomaly = ANOMALY.build(
            anomaly_id=f"price_jump:coinbase:BTC-USD:{trades[-1].ts}",
            kind="price_jump",
            subject="coinbase:BTC-USD",
            exchange="coinbase",
            symbol="BTC-USD",
            ts=trades[-1].ts,
            score=7.5,
            severity="critical",
            observed=0.021,
            expected=0.0004,
            explanation="1m return of +2.1% is 7.5 robust sigmas above the usual 0.04%",
        )
        async with EventProducer(settings, component="test") as producer:
            await producer.send(
                settings.topic("anomalies"), b"coinbase:BTC-USD", ANOMALY.encode(anomaly), "test"
            )
            await producer.flush()

        wait_until(driver, "a price change", lambda: price_texts(driver) != before_prices)
        wait_until(driver, "a new candle", lambda: candle_count(driver) > before_candles)
        wait_until(
            driver,
            "the anomaly",
            lambda: "7.5 robust sigmas" in driver.find_element(By.ID, "anomalies").text,
        )
        time.sleep(1.0)  # let the chart finish its animation frame before the picture
        driver.save_screenshot(str(shot))

        # Another series: its history loads, and its live candles come through the
        # chart's own subscription, renewed for the newly charted symbol.
        await asyncio.to_thread(
            driver.execute_script,
            "const s = document.getElementById('series');"
            "s.value = 'coinbase:BTC-USD'; s.dispatchEvent(new Event('change'));",
        )
        wait_until(driver, "coinbase's history", lambda: candle_count(driver) > 30)
        switched_candles = settled(lambda: candle_count(driver))
        later = waving_trades(SERIES[:1], start=trades[-1].ts, minutes=3, seed=8)
        await publish(settings, later)
        wait_until(driver, "a new coinbase candle", lambda: candle_count(driver) > switched_candles)
        driver.save_screenshot(str(ARTIFACTS / "dashboard-switched.png"))

        prices = settled(lambda: price_texts(driver))
        signals = settled(
            lambda: [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#signals li")]
        )
        chart_pixels = driver.execute_script(CHART_PIXELS)
        anomalies_text = driver.find_element(By.ID, "anomalies").text
    print(f"\ndashboard screenshot: {shot}")
    last = {t.symbol: t.price for t in trades}
    assert f"{last['ETH-USDT']:,.2f}" in prices["ETH-USDT"]
    assert "coinbase" in prices["BTC-USD"] and "kraken" in prices["BTC-USD"]
    assert signals and "No signals" not in signals[0]
    assert any(word in signals[0] for word in ("EMA", "MACD", "RSI", "Bollinger"))
    assert "critical" in anomalies_text and "coinbase:BTC-USD" in anomalies_text
    assert chart_pixels > 500, f"the chart drew {chart_pixels} candle pixels"
