"""`/v1/anomalies` and `/v1/onchain/transfers` against rows in the real ClickHouse engine.

Every expectation is a row this module inserted: anomalies of several kinds, subjects
and severities, and transfers on two chains, one of them later retracted by a reorg.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from schemas.events import Anomaly, OnchainTransfer
from sigflow.roles import migrate
from sigflow.settings import Settings
from sinks.warehouse import connect
from tests.integration.test_api import assert_error, new_api_key, serve, settings_for

pytestmark = pytest.mark.integration

T0 = 1_718_000_000_000
MINUTE = 60_000


def anomaly(n: int, kind: str, severity: str, **fields: Any) -> Anomaly:
    values: dict[str, Any] = {
        "anomaly_id": f"{kind}:binance:BTC-USDT:1m:{T0 + n * MINUTE}",
        "kind": kind,
        "subject": "binance:BTC-USDT",
        "exchange": "binance",
        "symbol": "BTC-USDT",
        "interval": "1m",
        "ts": T0 + n * MINUTE,
        "score": 5.0 + n,
        "severity": severity,
        "observed": 0.03,
        "expected": 0.001,
        "explanation": f"anomaly {n}",
    }
    return Anomaly(**{**values, **fields})


ANOMALIES = [
    anomaly(0, "price_jump", "warning"),
    anomaly(1, "volume_spike", "info"),
    anomaly(2, "price_jump", "critical", exchange="coinbase", subject="coinbase:BTC-USDT"),
    anomaly(3, "price_jump", "info", symbol="ETH-USDT", subject="binance:ETH-USDT"),
    anomaly(
        4,
        "whale_transfer",
        "critical",
        exchange=None,
        symbol=None,
        interval=None,
        chain_id=1,
        subject="chain:1",
    ),
    anomaly(5, "gas_spike", "warning", exchange=None, symbol=None, interval=None, chain_id=10),
]
NEWEST_FIRST = sorted(ANOMALIES, key=lambda a: a.ts, reverse=True)

USDC = "0x" + "a0" * 20
WETH = "0x" + "c0" * 20


def transfer(n: int, **fields: Any) -> OnchainTransfer:
    values: dict[str, Any] = {
        "chain_id": 1,
        "block": 100 + n,
        "block_hash": "0x" + f"{n:02x}" * 32,
        "timestamp": T0 + n * 12_000,
        "tx_hash": "0x" + f"{n + 100:02x}" * 32,
        "log_index": n,
        "token": USDC,
        "token_symbol": "USDC",
        "from_address": "0x" + "11" * 20,
        "to_address": "0x" + "22" * 20,
        "amount": Decimal("1500000.5"),
        "usd_value": 1_500_000.5,
        "confirmations": 12,
    }
    return OnchainTransfer(**{**values, **fields})


TRANSFERS = [
    transfer(0),
    transfer(1, amount=Decimal("0.000000000000000001"), usd_value=0.000000000000000001),
    transfer(2, usd_value=None, confirmations=3),  # no price, not confirmed yet
    transfer(3, token=WETH, token_symbol="WETH", amount=Decimal("800"), usd_value=2_800_000.0),
    transfer(4, chain_id=10, confirmations=40),
    transfer(5, usd_value=9_000_000.0, confirmations=1),
]
RETRACTED = transfer(6, usd_value=5_000_000.0)  # published, then removed by a reorg
CANONICAL_NEWEST_FIRST = sorted(TRANSFERS, key=lambda t: t.timestamp, reverse=True)


def rows(events: list[Any]) -> list[list[Any]]:
    return [[getattr(event, name) for name in type(event).model_fields] for event in events]


@pytest.fixture(scope="module")
async def settings(kafka_bootstrap: str, clickhouse_url: str) -> Settings:
    settings = settings_for(kafka_bootstrap, clickhouse_url, f"apires{uuid.uuid4().hex[:8]}")
    await migrate(settings)
    client = await connect(settings)
    try:
        await client.insert("anomalies", rows(ANOMALIES), column_names=list(Anomaly.model_fields))
        columns = list(OnchainTransfer.model_fields)
        await client.insert(
            "onchain_transfers", rows([*TRANSFERS, RETRACTED]), column_names=columns
        )
        removed = RETRACTED.model_copy(update={"removed": True, "confirmations": 0})
        await client.insert("onchain_transfers", rows([removed]), column_names=columns)
    finally:
        await client.close()
    return settings


@pytest.fixture(scope="module")
async def api(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings, await new_api_key(settings)) as http:
        yield http


async def get_list(api: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    response = await api.get(path, params=params)
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body


async def walk_pages(api: httpx.AsyncClient, path: str, **params: Any) -> list[list[Any]]:
    """Every page, following `X-Next-Cursor` until a page comes without one."""
    pages: list[list[Any]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.get(path, params=query)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = response.headers.get("X-Next-Cursor")
        if cursor is None:
            return pages
        assert len(pages) < 20, "pagination does not end"


# ---- anomalies -----------------------------------------------------------------------


async def test_anomalies_come_newest_first_with_every_field(api: httpx.AsyncClient) -> None:
    body = await get_list(api, "/v1/anomalies")
    assert body == [a.model_dump() for a in NEWEST_FIRST]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"kind": "price_jump"}, [a for a in NEWEST_FIRST if a.kind == "price_jump"]),
        ({"symbol": "ETH-USDT"}, [ANOMALIES[3]]),
        ({"exchange": "coinbase"}, [ANOMALIES[2]]),
        ({"chain_id": 10}, [ANOMALIES[5]]),
        ({"min_severity": "warning"}, [a for a in NEWEST_FIRST if a.severity != "info"]),
        ({"min_severity": "critical", "kind": "price_jump"}, [ANOMALIES[2]]),
        ({"start": T0 + MINUTE, "end": "2024-06-10T06:16:20Z"}, [ANOMALIES[2], ANOMALIES[1]]),
        ({"kind": "reorg"}, []),
    ],
    ids=["kind", "symbol", "exchange", "chain", "min-severity", "combined", "range", "none"],
)
async def test_anomaly_filters_select_only_matching_rows(
    api: httpx.AsyncClient, params: dict[str, Any], expected: list[Anomaly]
) -> None:
    assert await get_list(api, "/v1/anomalies", **params) == [a.model_dump() for a in expected]


async def test_anomaly_pages_cover_every_row_once_in_order(api: httpx.AsyncClient) -> None:
    pages = await walk_pages(api, "/v1/anomalies", limit=4)
    assert [len(page) for page in pages] == [4, 2]
    flat = [item["anomaly_id"] for page in pages for item in page]
    assert flat == [a.anomaly_id for a in NEWEST_FIRST]


async def test_a_full_last_anomaly_page_ends_with_an_empty_one(api: httpx.AsyncClient) -> None:
    pages = await walk_pages(api, "/v1/anomalies", limit=3)
    assert [len(page) for page in pages] == [3, 3, 0]


@pytest.mark.parametrize(
    ("params", "code", "parts"),
    [
        ({"kind": "meteor"}, "invalid_request", ["query.kind"]),
        ({"min_severity": "loud"}, "invalid_request", ["query.min_severity"]),
        ({"chain_id": 0}, "invalid_request", ["query.chain_id"]),
        ({"symbol": "btcusdt"}, "invalid_request", ["query.symbol"]),
        ({"start": "soon"}, "invalid_time", ["start"]),
        ({"cursor": "bm90IGEgY3Vyc29y"}, "invalid_cursor", ["cursor"]),
        ({"limit": 0}, "invalid_request", ["query.limit"]),
    ],
    ids=["kind", "severity", "chain", "symbol", "time", "cursor", "limit"],
)
async def test_bad_anomaly_parameters_are_422_in_the_error_shape(
    api: httpx.AsyncClient, params: dict[str, Any], code: str, parts: list[str]
) -> None:
    assert_error(await api.get("/v1/anomalies", params=params), 422, code, *parts)


# ---- on-chain transfers --------------------------------------------------------------


def dumped(transfers: list[OnchainTransfer]) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json") for t in transfers]


async def test_transfers_come_newest_first_and_never_show_a_retracted_one(
    api: httpx.AsyncClient,
) -> None:
    body = await get_list(api, "/v1/onchain/transfers")
    assert body == dumped(CANONICAL_NEWEST_FIRST)
    assert RETRACTED.tx_hash not in {item["tx_hash"] for item in body}


async def test_transfer_amounts_are_exact_decimal_strings_without_padding(
    api: httpx.AsyncClient,
) -> None:
    body = await get_list(api, "/v1/onchain/transfers", token="USDC")
    amounts = {item["log_index"]: item["amount"] for item in body}
    assert amounts[0] == "1500000.5"
    assert Decimal(amounts[1]) == Decimal("0.000000000000000001")  # Python's form: 1E-18


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"chain_id": 10}, [TRANSFERS[4]]),
        ({"token": WETH}, [TRANSFERS[3]]),
        ({"token": WETH.upper().replace("0X", "0x")}, [TRANSFERS[3]]),
        ({"token": "weth"}, [TRANSFERS[3]]),
        ({"min_usd": 2_000_000}, [TRANSFERS[5], TRANSFERS[3]]),
        ({"min_usd": 0}, [t for t in CANONICAL_NEWEST_FIRST if t.usd_value is not None]),
        ({"confirmed": True}, [t for t in CANONICAL_NEWEST_FIRST if t.confirmations >= 12]),
        ({"confirmations": 13}, [TRANSFERS[4]]),
        (
            {"confirmed": True, "confirmations": 3},
            [t for t in CANONICAL_NEWEST_FIRST if t.confirmations >= 3],
        ),
        ({"start": T0 + 24_000, "end": T0 + 48_000}, [TRANSFERS[3], TRANSFERS[2]]),
        ({"token": "DAI"}, []),
    ],
    ids=[
        "chain",
        "token-address",
        "token-address-mixed-case",
        "token-symbol-any-case",
        "min-usd",
        "min-usd-leaves-out-unpriced",
        "confirmed-at-settings-depth",
        "confirmations-param",
        "confirmed-with-depth",
        "range",
        "unknown-token",
    ],
)
async def test_transfer_filters_select_only_matching_transfers(
    api: httpx.AsyncClient, params: dict[str, Any], expected: list[OnchainTransfer]
) -> None:
    assert await get_list(api, "/v1/onchain/transfers", **params) == dumped(expected)


async def test_transfer_pages_cover_every_transfer_once_in_order(api: httpx.AsyncClient) -> None:
    pages = await walk_pages(api, "/v1/onchain/transfers", limit=4)
    assert [len(page) for page in pages] == [4, 2]
    flat = [item for page in pages for item in page]
    assert flat == dumped(CANONICAL_NEWEST_FIRST)


@pytest.mark.parametrize(
    ("params", "parts"),
    [
        ({"min_usd": -1}, ["query.min_usd"]),
        ({"confirmations": 0}, ["query.confirmations"]),
        ({"chain_id": "mainnet"}, ["query.chain_id"]),
        ({"token": "x" * 65}, ["query.token"]),
        ({"confirmed": "maybe"}, ["query.confirmed"]),
    ],
    ids=["negative-usd", "zero-confirmations", "chain-name", "long-token", "confirmed-word"],
)
async def test_bad_transfer_parameters_are_422_in_the_error_shape(
    api: httpx.AsyncClient, params: dict[str, Any], parts: list[str]
) -> None:
    assert_error(
        await api.get("/v1/onchain/transfers", params=params), 422, "invalid_request", *parts
    )


async def test_a_cursor_from_another_endpoint_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/anomalies", params={"limit": 1})
    cursor = response.headers["X-Next-Cursor"]
    refused = await api.get("/v1/onchain/transfers", params={"cursor": cursor})
    assert_error(refused, 422, "invalid_cursor", "cursor")


@pytest.mark.parametrize("path", ["/v1/anomalies", "/v1/onchain/transfers"])
async def test_reading_without_a_key_is_401(settings: Settings, path: str) -> None:
    async with serve(settings) as anonymous:
        assert_error(await anonymous.get(path), 401, "missing_api_key", "X-API-Key")
