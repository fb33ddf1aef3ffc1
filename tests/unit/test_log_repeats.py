"""aiokafka's retry errors are rate-limited per message template; other loggers are not."""

from __future__ import annotations

import logging

from sigflow.logs import RepeatFilter


def record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_repeated_client_error_passes_once_per_interval_and_then_counts_the_hidden() -> None:
    now = [0.0]
    repeats = RepeatFilter("aiokafka", interval=10.0, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"

    passed = [repeats.filter(record("aiokafka", template, 1, f"try {n}")) for n in range(50)]
    assert passed == [True] + [False] * 49
    assert repeats.filter(record("aiokafka", "Unable to update metadata from %s", [1]))

    now[0] = 10.0
    later = record("aiokafka", template, 1, "try 50")
    assert repeats.filter(later)
    assert (
        later.getMessage()
        == "Unable connect to node with id 1: try 50 (49 more like this since the last shown)"
    )
    assert later.suppressed == 49  # type: ignore[attr-defined]


def test_other_loggers_are_never_held_back() -> None:
    repeats = RepeatFilter("aiokafka", interval=10.0, clock=lambda: 0.0)
    assert all(repeats.filter(record("sigflow.sinks", "flush failed: %s", n)) for n in range(5))
