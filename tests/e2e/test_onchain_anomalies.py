"""On-chain anomalies end to end: a whale transfer priced from sigflow's own live ETH-USD
candles, a gas spike and a reorg, through real Apache Kafka and a real Faust worker, and
the same anomaly records again from a replay into fresh topics and a fresh app id."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingest.chain.checkpoint import chain_key
from ingest.producer import EventProducer
from processors.app import by_symbol_topic, create_app, ensure_processor_topics, prices_topic
from schemas.codec import codec_for
from schemas.events import OnchainBlock, OnchainTransfer, Trade
from sigflow.kafka import consumer_lag
from sigflow.settings import Settings
from tests.conftest import Roles
from tests.e2e.pipeline import START, eventually, publish
from tests.e2e.test_anomalies_and_alerts import topic_records

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

TRADE = codec_for(Trade)
BLOCK = codec_for(OnchainBlock)
TRANSFER = codec_for(OnchainTransfer)
MINUTE, BLOCK_MS, GWEI, CHAIN = 60_000, 12_000, 10**9, 1
FIRST_BLOCK, SPIKE_BLOCK, WHALE_BLOCK = 100, 130, 112
WHALE_WETH = Decimal("6000")


def eth_trades() -> list[Any]:
    """coinbase ETH-USD: five trades a minute for 10 minutes, minute m at 2000 + m USD."""
    return [
        TRADE.build(
            exchange="coinbase",
            symbol="ETH-USD",
            trade_id=f"{minute}-{i}",
            price=2000.0 + minute,
            size=1.0,
            side="buy",
            ts=START + minute * MINUTE + i * 10_000,
            received_ts=START + minute * MINUTE + i * 10_000,
        )
        for minute in range(10)
        for i in range(5)
    ]


def block_hash(number: int, branch: int = 0) -> str:
    return "0x" + f"{branch:02x}{number:062x}"


def block(number: int, base_fee: int, status: str = "new", branch: int = 0) -> bytes:
    parent_branch = branch if number - 1 >= 132 else 0
    return BLOCK.encode(
        BLOCK.build(
            chain_id=CHAIN,
            number=number,
            hash=block_hash(number, branch),
            parent_hash=block_hash(number - 1, parent_branch),
            timestamp=START + (number - FIRST_BLOCK) * BLOCK_MS,
            base_fee=base_fee,
            gas_used=15_000_000,
            tx_count=100,
            status=status,
            confirmations=0 if status == "reorged" else 1,
        )
    )


def whale_transfer() -> bytes:
    return TRANSFER.encode(
        TRANSFER.build(
            chain_id=CHAIN,
            block=WHALE_BLOCK,
            block_hash=block_hash(WHALE_BLOCK),
            timestamp=START + (WHALE_BLOCK - FIRST_BLOCK) * BLOCK_MS,
            tx_hash="0x" + "ab" * 32,
            log_index=7,
            token="0x" + "c0" * 20,
            token_symbol="WETH",
            from_address="0x" + "01" * 20,
            to_address="0x" + "02" * 20,
            amount=WHALE_WETH,
            usd_value=None,
            confirmations=1,
            removed=False,
        )
    )


def chain_records() -> list[tuple[str, bytes]]:
    """Calm blocks 100..129 (~20 gwei), a 3x base fee at 130, blocks 131..133, then a
    reorg orphaning 132 and 133 and their replacements, as the chain feed publishes."""
    records = [("onchain.transfers", whale_transfer())]
    for number in range(FIRST_BLOCK, SPIKE_BLOCK):
        records.append(("onchain.blocks", block(number, 20 * GWEI + (number % 5) * GWEI // 10)))
    records.append(("onchain.blocks", block(SPIKE_BLOCK, 60 * GWEI)))
    records += [("onchain.blocks", block(n, 20 * GWEI)) for n in (131, 132, 133)]
    records += [("onchain.blocks", block(n, 20 * GWEI, "reorged")) for n in (132, 133)]
    records += [("onchain.blocks", block(n, 20 * GWEI, branch=1)) for n in (132, 133, 134)]
    return records


async def run(settings: Settings, roles: Roles) -> list[tuple[bytes, bytes]]:
    """Start a processor, publish the trades and chain records, wait until it is done;
    the anomalies topic's records."""
    # As the process role does, before anything can touch the internal topic: polling
    # its lag would let the broker auto-create it with a single partition.
    await ensure_processor_topics(settings, create_app(settings))
    roles.start("process")
    await publish(settings, eth_trades())
    async with EventProducer(settings, component="test") as producer:
        for topic, value in chain_records():
            await producer.send(settings.topic(topic), chain_key(CHAIN), value, "test")
        await producer.flush()
    inputs = [
        settings.topic(name) for name in ("trades", "onchain.blocks", "onchain.transfers")
    ] + [by_symbol_topic(settings), prices_topic(settings)]

    async def done() -> bool:
        try:
            if await consumer_lag(settings, settings.processor_app_id, inputs) != 0:
                return False
        except Exception:
            return False  # the internal topics are not there yet
        kinds = {
            orjson.loads(value)["kind"]
            for _, value in await topic_records(settings, settings.topic("anomalies"))
        }
        return {"whale_transfer", "gas_spike", "reorg"} <= kinds

    await eventually(done, "the on-chain anomalies", roles, timeout=120)
    return await topic_records(settings, settings.topic("anomalies"))


async def test_whale_priced_from_the_stream_gas_spike_and_reorg_identical_on_replay(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    # 1m candles only: market anomalies of 1s candles are not what this test is about.
    settings = pipeline_settings.model_copy(update={"candle_intervals": ["1m"]})
    replay_settings = settings.model_copy(
        update={
            "topic_prefix": "r" + settings.topic_prefix,
            "processor_app_id": settings.processor_app_id + "-replay",
        }
    )
    results = []
    for run_settings, name in ((settings, "original"), (replay_settings, "replay")):
        run_roles = Roles(run_settings, tmp_path / name)
        try:
            results.append(await run(run_settings, run_roles))
        finally:
            run_roles.stop_all()
    original, replayed = results
    assert original == replayed, "anomaly records differ between identical runs"

    found = {a["kind"]: a for a in (orjson.loads(value) for _, value in original)}
    keys = {key for key, _ in original}
    assert keys == {f"chain:{CHAIN}".encode()}
    whale = found["whale_transfer"]
    # Block 112 is at START + 144 s: the latest close at or before it is the candle of
    # minute 1 (closing at START + 120 s), at 2001 USD.
    assert whale["observed"] == float(WHALE_WETH) * 2001.0
    assert (whale["exchange"], whale["symbol"]) == ("coinbase", "ETH-USD")
    assert whale["severity"] == "warning"
    assert whale["anomaly_id"] == f"whale_transfer:chain:{CHAIN}:0x{'ab' * 32}:7"
    gas = found["gas_spike"]
    assert gas["anomaly_id"] == f"gas_spike:chain:{CHAIN}:{block_hash(SPIKE_BLOCK)}"
    assert gas["observed"] == 60 * GWEI and gas["severity"] == "critical"
    reorg = found["reorg"]
    assert reorg["anomaly_id"] == f"reorg:chain:{CHAIN}:{block_hash(132)}"
    assert (reorg["observed"], reorg["severity"]) == (2.0, "warning")
    assert len(original) == 3
