"""Staged table changes: set in the table, and encoded and placed as Faust's own
changelog writes would be, so a recovering worker reads them back."""

from __future__ import annotations

from faust.types import Message

from processors.app import AgentRunner, faust_app
from processors.placement import key_partition
from sigflow.settings import Settings


async def test_staged_states_are_in_the_table_and_their_changelog_records_decode_back() -> None:
    settings = Settings.model_construct()
    table = AgentRunner(faust_app(settings), settings).table("candle-state")
    states = {b"binance:BTC-USDT": {"offset": 7, "close": 1.5}, b"okx:ETH-USDT": {"offset": 3}}

    records = table.stage(states)

    assert {key: table.get(key) for key in states} == states
    changelog = table.changelog_topic.get_topic_name()
    assert [(r.topic, r.partition, r.key) for r in records] == [
        (changelog, key_partition(key, settings.topic_partitions), key) for key in states
    ]
    decoded = {}
    for record in records:  # as table recovery decodes what it reads from the changelog
        message = Message(
            record.topic, record.partition, 0, 0.0, 0, [], record.key, record.value, None
        )
        event = await table.changelog_topic.decode(message)
        decoded[event.key] = event.value
    assert decoded == states
