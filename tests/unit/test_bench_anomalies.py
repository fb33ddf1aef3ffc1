"""Scoring of the labelled anomaly benchmark (precision and recall per kind)."""

from __future__ import annotations

import pytest

from bench.anomalies import Label, random_scenario, scenario_labels, score


def test_precision_and_recall_count_matches_misses_and_neutral_zones() -> None:
    labels = [
        Label("price_jump", "a:X-USDT", 100, 101),
        Label("price_jump", "b:X-USDT", 100, 101),
        Label("divergence", "a:X-USDT", 200, 201),
    ]
    ignored = [Label("divergence", "a:X-USDT", 300, 301)]
    found = [
        ("price_jump", "a:X-USDT", 100),  # hit
        ("price_jump", "a:X-USDT", 100),  # the same label again: still a true detection
        ("price_jump", "a:X-USDT", 500),  # false
        ("divergence", "a:X-USDT", 300),  # neutral: counts neither way
    ]
    scores = score(found, labels, ignored)
    assert scores["price_jump"].precision == pytest.approx(2 / 3)
    assert scores["price_jump"].recall == pytest.approx(1 / 2)
    assert scores["divergence"].precision == 1.0 and scores["divergence"].recall == 0.0
    assert scores["stale_feed"].recall == 1.0 and scores["stale_feed"].detections == 0


def test_a_random_scenario_is_reproducible_and_labels_every_injection() -> None:
    scenario = random_scenario(3)
    assert scenario == random_scenario(3)
    labels, ignored = scenario_labels(scenario)
    kinds = [label.kind for label in labels]
    assert kinds.count("price_jump") == 6 * len(scenario.exchanges)
    assert kinds.count("volume_spike") == 12 and kinds.count("stale_feed") == 6
    assert kinds.count("divergence") == 6 * 9 and len(ignored) == 6 * 4
