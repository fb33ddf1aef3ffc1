"""The signal rule engine: default rules, crossing and equality conventions, strength,
rule-file validation, custom files and determinism.

Candles are hand-built: a calm baseline where no default rule is near its line, with one
series moved per scenario, so each expected signal is known in advance.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.exceptions import IndicatorInputError, SignalRuleError
from processors.signals import (
    FiredSignal,
    SignalEngine,
    crossing,
    load_rules,
    parse_rules,
)

DEFAULT_IDS = [
    "ema_cross_12_26",
    "macd_signal_cross",
    "rsi_14_leaves_oversold",
    "rsi_14_leaves_overbought",
    "bollinger_breakout_upper",
    "bollinger_breakout_lower",
]

# No default rule is near its line here: EMA 12 below EMA 26, MACD below its signal,
# RSI mid-range, close well inside the bands.
BASELINE: dict[str, float] = {
    "ema_12": 100.0,
    "ema_26": 101.0,
    "macd": -0.5,
    "macd_signal": -0.2,
    "rsi_14": 50.0,
    "bb_upper": 110.0,
    "bb_middle": 100.0,
    "bb_lower": 90.0,
    "atr_14": 2.0,
}
BASE_CLOSE = 100.0

Candle = tuple[float, dict[str, float]]


def candles(series: str, path: list[float], **fixed: float) -> list[Candle]:
    """One candle per value of `series` on the baseline (`close` is a series too)."""
    result = []
    for value in path:
        values = BASELINE | fixed
        close = BASE_CLOSE
        if series == "close":
            close = value
        else:
            values = values | {series: value}
        result.append((close, values))
    return result


def run(engine: SignalEngine, sequence: list[Candle]) -> list[tuple[int, FiredSignal]]:
    """Feed candles in order as the processor does; (candle index, signal) for each fire."""
    fired = []
    previous: dict[str, float] | None = None
    for index, (close, values) in enumerate(sequence):
        for signal in engine.evaluate(close=close, values=values, previous=previous):
            fired.append((index, signal))
        previous = values | {"close": close}
    return fired


def write_rules(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return path


EMA_RULE = """
[[rules]]
id = "ema_cross"
kind = "crossover"
fast = "ema_12"
slow = "ema_26"
up = { direction = 1, explanation = "up {fast} {slow}" }
down = { direction = -1, explanation = "down {fast} {slow}" }
"""


@pytest.fixture(scope="module")
def engine() -> SignalEngine:
    return SignalEngine(load_rules())


def test_default_rules_load_in_file_order_with_stable_ids() -> None:
    rules = load_rules()
    assert [rule.id for rule in rules] == DEFAULT_IDS
    assert {rule.kind for rule in rules} == {"crossover", "threshold_cross"}


def test_the_baseline_fires_nothing(engine: SignalEngine) -> None:
    assert run(engine, [(BASE_CLOSE, BASELINE)] * 5) == []


# (rule, series, path, index where it crosses, direction, numbers in the explanation)
SCENARIOS = [
    ("ema_cross_12_26", "ema_12", [100.0, 100.5, 101.2, 101.5], 2, 1, ["101.20", "101.00"]),
    ("ema_cross_12_26", "ema_12", [102.0, 101.5, 100.9, 100.0], 2, -1, ["100.90", "101.00"]),
    ("macd_signal_cross", "macd", [-0.5, -0.3, -0.1, 0.2], 2, 1, ["-0.1", "-0.2"]),
    ("macd_signal_cross", "macd", [0.3, 0.1, -0.25, -0.4], 2, -1, ["-0.25", "-0.2"]),
    # Entering oversold (index 1) is not a signal; leaving it (index 4) is.
    (
        "rsi_14_leaves_oversold",
        "rsi_14",
        [35.0, 28.0, 25.0, 29.0, 31.5, 34.0],
        4,
        1,
        ["29.00", "31.50", "30"],
    ),
    (
        "rsi_14_leaves_overbought",
        "rsi_14",
        [65.0, 72.0, 75.0, 69.0, 66.0],
        3,
        -1,
        ["75.00", "69.00", "70"],
    ),
    (
        "bollinger_breakout_upper",
        "close",
        [100.0, 105.0, 111.25, 112.0],
        2,
        1,
        ["111.25", "110.00"],
    ),
    ("bollinger_breakout_lower", "close", [100.0, 95.0, 89.5, 85.0], 2, -1, ["89.50", "90.00"]),
]


@pytest.mark.parametrize(
    ("rule", "series", "path", "at", "direction", "numbers"),
    SCENARIOS,
    ids=[f"{s[0]}-{'bullish' if s[4] == 1 else 'bearish'}" for s in SCENARIOS],
)
def test_each_default_rule_fires_exactly_on_the_crossing_candle(
    engine: SignalEngine,
    rule: str,
    series: str,
    path: list[float],
    at: int,
    direction: int,
    numbers: list[str],
) -> None:
    fired = run(engine, candles(series, path))

    assert [(index, signal.rule, signal.direction) for index, signal in fired] == [
        (at, rule, direction)
    ]
    signal = fired[0][1]
    assert 0 < signal.strength <= 1
    for number in numbers:
        assert number in signal.explanation


def test_ema_explanation_reads_as_plain_language(engine: SignalEngine) -> None:
    [(_, signal)] = run(engine, candles("ema_12", [8044.0, 8047.98], ema_26=8045.59))
    assert signal.explanation == (
        "EMA 12 (8047.98) crossed above EMA 26 (8045.59): short-term momentum turned up"
    )


def test_nothing_fires_on_a_series_first_candle(engine: SignalEngine) -> None:
    crossed = BASELINE | {"ema_12": 105.0}
    assert engine.evaluate(close=BASE_CLOSE, values=crossed, previous=None) == []


@pytest.mark.parametrize("missing_on", ["previous", "current"])
def test_nothing_fires_while_a_line_warms_up(engine: SignalEngine, missing_on: str) -> None:
    before = BASELINE | {"close": BASE_CLOSE}
    now = BASELINE | {"ema_12": 105.0}  # EMA 12 crossed above EMA 26 (101)
    if missing_on == "previous":
        del before["ema_26"]
    else:
        del now["ema_26"]
    assert engine.evaluate(close=BASE_CLOSE, values=now, previous=before) == []


def test_a_non_finite_value_counts_as_warming_up(engine: SignalEngine) -> None:
    before = BASELINE | {"close": BASE_CLOSE, "ema_26": math.nan}
    now = BASELINE | {"ema_12": 105.0}
    assert engine.evaluate(close=BASE_CLOSE, values=now, previous=before) == []


def test_touching_the_line_from_above_or_resting_on_it_fires_nothing(
    engine: SignalEngine,
) -> None:
    # EMA 12 comes down onto EMA 26 (101), rests there, and goes back up.
    assert run(engine, candles("ema_12", [102.0, 101.0, 101.0, 102.0])) == []
    # RSI touches 30 from above and goes back up: it never entered oversold.
    assert run(engine, candles("rsi_14", [35.0, 30.0, 33.0])) == []


def test_reaching_the_line_from_below_is_an_upward_cross_and_leaving_it_a_downward_one(
    engine: SignalEngine,
) -> None:
    # Equality belongs to the upper side, so each change of side fires once, alternating.
    fired = run(engine, candles("ema_12", [100.0, 101.0, 101.0, 100.5]))
    assert [(index, signal.direction) for index, signal in fired] == [(1, 1), (3, -1)]


def test_crossing_uses_at_or_above_as_the_upper_side() -> None:
    assert crossing(-1.0, 0.0) == "up"
    assert crossing(0.0, -1.0) == "down"
    assert crossing(1.0, 0.0) is None
    assert crossing(0.0, 0.0) is None
    assert crossing(0.0, 1.0) is None
    assert crossing(-1.0, -0.5) is None


def test_crossover_strength_is_the_gap_move_in_atr() -> None:
    engine = SignalEngine(parse_rules(EMA_RULE))
    before = {"ema_12": 100.5, "ema_26": 101.0, "close": 100.0}  # gap -0.5
    now = {"ema_12": 101.2, "ema_26": 101.0, "atr_14": 2.0}  # gap +0.2
    [signal] = engine.evaluate(close=100.0, values=now, previous=before)
    assert signal.strength == pytest.approx((0.2 + 0.5) / 2.0)


def test_strength_falls_back_to_close_without_atr_and_clips_at_one() -> None:
    engine = SignalEngine(parse_rules(EMA_RULE))
    before = {"ema_12": 100.5, "ema_26": 101.0, "close": 100.0}
    [signal] = engine.evaluate(
        close=100.0, values={"ema_12": 101.2, "ema_26": 101.0}, previous=before
    )
    assert signal.strength == pytest.approx(0.7 / 100.0)

    [signal] = engine.evaluate(
        close=100.0, values={"ema_12": 150.0, "ema_26": 101.0, "atr_14": 2.0}, previous=before
    )
    assert signal.strength == 1.0


def test_threshold_strength_uses_the_rule_scale(engine: SignalEngine) -> None:
    [(_, signal)] = run(engine, candles("rsi_14", [28.0, 31.0]))
    assert signal.strength == pytest.approx(3.0 / 10.0)  # strength_scale = 10 RSI points


def test_min_strength_silences_weak_crossings() -> None:
    text = EMA_RULE.replace('kind = "crossover"', 'kind = "crossover"\nmin_strength = 0.5')
    engine = SignalEngine(parse_rules(text))
    before = {"ema_12": 100.9, "ema_26": 101.0, "close": 100.0}
    weak = {"ema_12": 101.1, "ema_26": 101.0, "atr_14": 2.0}  # strength 0.1
    strong = {"ema_12": 102.1, "ema_26": 101.0, "atr_14": 2.0}  # strength 0.6
    assert engine.evaluate(close=100.0, values=weak, previous=before) == []
    assert [s.rule for s in engine.evaluate(close=100.0, values=strong, previous=before)] == [
        "ema_cross"
    ]


def test_the_close_argument_is_the_current_close(engine: SignalEngine) -> None:
    before = BASELINE | {"close": 105.0}
    values = BASELINE | {"close": 100.0}  # ignored: the argument wins
    [signal] = engine.evaluate(close=111.0, values=values, previous=before)
    assert signal.rule == "bollinger_breakout_upper"


@pytest.mark.parametrize("close", [0.0, -1.0, math.nan, math.inf])
def test_an_impossible_close_is_an_input_error(engine: SignalEngine, close: float) -> None:
    with pytest.raises(IndicatorInputError, match="close"):
        engine.evaluate(close=close, values=BASELINE, previous=None)


def test_several_rules_fire_in_rule_file_order(engine: SignalEngine) -> None:
    before = BASELINE | {"close": BASE_CLOSE, "rsi_14": 75.0}
    now = BASELINE | {"ema_12": 102.0, "macd": 0.1, "rsi_14": 65.0}
    fired = engine.evaluate(close=112.0, values=now, previous=before)
    assert [s.rule for s in fired] == [
        "ema_cross_12_26",
        "macd_signal_cross",
        "rsi_14_leaves_overbought",
        "bollinger_breakout_upper",
    ]


def test_same_inputs_give_the_same_signals() -> None:
    sequence = (
        candles("ema_12", [100.0, 102.0, 100.0, 103.0])
        + candles("rsi_14", [25.0, 35.0, 75.0, 60.0])
        + candles("close", [100.0, 115.0, 85.0, 100.0])
    )
    first = run(SignalEngine(load_rules()), sequence)
    second = run(SignalEngine(load_rules()), sequence)
    assert first == second
    assert len(first) >= 6


def test_a_custom_rules_file_works(tmp_path: Path) -> None:
    path = write_rules(
        tmp_path,
        """
        [[rules]]
        id = "macd_hist_turns_positive"
        kind = "threshold_cross"
        series = "macd_hist"
        level = 0
        strength_scale = 0.5
        up = { direction = 1, explanation = "histogram {value_prev:+.2f} -> {value:+.2f}" }

        [[rules]]
        id = "close_under_vwap"
        kind = "crossover"
        fast = "close"
        slow = "vwap"
        down = { direction = -1, explanation = "close {fast} < vwap {slow} ({strength:.0%})" }
        """,
    )
    engine = SignalEngine(load_rules(path))
    before = {"macd_hist": -0.1, "vwap": 99.0, "close": 100.0}
    now = {"macd_hist": 0.15, "vwap": 99.5, "atr_14": 1.0}
    fired = engine.evaluate(close=98.5, values=now, previous=before)
    assert [(s.rule, s.direction, s.explanation) for s in fired] == [
        ("macd_hist_turns_positive", 1, "histogram -0.10 -> +0.15"),
        ("close_under_vwap", -1, "close 98.50 < vwap 99.50 (100%)"),
    ]
    assert [s.strength for s in fired] == pytest.approx([0.25 / 0.5, 1.0])


# One invalid file per error kind: (name, rule table, words the message must contain).
RULE_HEAD = '[[rules]]\nid = "bad_rule"\n'
EMA_BODY = 'fast = "ema_12"\nslow = "ema_26"\nup = { direction = 1, explanation = "x" }\n'
RSI_THRESHOLD = 'kind = "threshold_cross"\nseries = "rsi_14"\n'
UP = 'up = { direction = 1, explanation = "x" }\n'
INVALID = [
    (
        "unknown kind",
        'kind = "golden_cross"\n' + EMA_BODY,
        ["unknown kind 'golden_cross'", "crossover"],
    ),
    (
        "unknown indicator",
        'kind = "crossover"\n' + EMA_BODY.replace("ema_26", "ema_50"),
        ["slow", "unknown series 'ema_50'"],
    ),
    (
        "same series twice",
        'kind = "crossover"\n' + EMA_BODY.replace("ema_26", "ema_12"),
        ["cannot cross itself"],
    ),
    (
        "nan level",
        RSI_THRESHOLD + "level = nan\n" + UP,
        ["level", "finite"],
    ),
    (
        "unreachable level",
        RSI_THRESHOLD + "level = 130\n" + UP,
        ["level 130 can never be crossed", "rsi_14"],
    ),
    (
        "text level",
        RSI_THRESHOLD + 'level = "30"\n' + UP,
        ["level", "valid number"],
    ),
    (
        "missing field",
        'kind = "crossover"\nfast = "ema_12"\nup = { direction = 1, explanation = "x" }\n',
        ["slow", "Field required"],
    ),
    ("unknown field", 'kind = "crossover"\nperiod = 3\n' + EMA_BODY, ["period", "Extra inputs"]),
    (
        "no direction",
        'kind = "crossover"\nfast = "ema_12"\nslow = "ema_26"\n',
        ["needs `up`, `down` or both"],
    ),
    (
        "bad direction",
        'kind = "crossover"\n' + EMA_BODY.replace("direction = 1", "direction = 2"),
        ["up.direction", "1 or -1"],
    ),
    (
        "boolean direction",
        'kind = "crossover"\n' + EMA_BODY.replace("direction = 1", "direction = true"),
        ["not a boolean"],
    ),
    (
        "unknown placeholder",
        'kind = "crossover"\n' + EMA_BODY.replace('"x"', '"{value}"'),
        ["unknown placeholder {value}", "{fast}"],
    ),
    (
        "bad format spec",
        'kind = "crossover"\n' + EMA_BODY.replace('"x"', '"{fast:.2q}"'),
        ["not a valid template"],
    ),
    (
        "min_strength above one",
        'kind = "crossover"\nmin_strength = 1.5\n' + EMA_BODY,
        ["min_strength", "less than or equal to 1"],
    ),
    (
        "zero strength scale",
        'kind = "crossover"\nstrength_scale = 0\n' + EMA_BODY,
        ["strength_scale", "greater than 0"],
    ),
]


@pytest.mark.parametrize(("table", "words"), [i[1:] for i in INVALID], ids=[i[0] for i in INVALID])
def test_an_invalid_rule_names_file_rule_and_reason(
    tmp_path: Path, table: str, words: list[str]
) -> None:
    path = write_rules(tmp_path, EMA_RULE + "\n" + RULE_HEAD + table)
    with pytest.raises(SignalRuleError) as raised:
        load_rules(path)
    message = str(raised.value)
    assert str(path) in message
    assert "rule #2 'bad_rule'" in message
    for word in words:
        assert word in message


def test_a_duplicate_id_names_both_rules(tmp_path: Path) -> None:
    path = write_rules(tmp_path, EMA_RULE + EMA_RULE)
    with pytest.raises(SignalRuleError, match=r"rule #2 'ema_cross': duplicate id .* rule #1"):
        load_rules(path)


def test_a_bad_rule_id_is_refused() -> None:
    with pytest.raises(SignalRuleError, match="id: String should match pattern"):
        parse_rules(EMA_RULE.replace('"ema_cross"', '"EMA cross!"'))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[[rules]\nid = 1", "not valid TOML"),
        ('name = "x"\n' + EMA_RULE, "unknown top-level key(s) ['name']"),
        ("# nothing\n", "no [[rules]] tables"),
    ],
    ids=["syntax", "unknown top-level key", "no rules"],
)
def test_an_invalid_file_names_the_file_and_reason(tmp_path: Path, text: str, words: str) -> None:
    path = write_rules(tmp_path, text)
    with pytest.raises(SignalRuleError) as raised:
        load_rules(path)
    assert str(path) in str(raised.value)
    assert words in str(raised.value)


def test_a_missing_file_is_a_rule_error(tmp_path: Path) -> None:
    with pytest.raises(SignalRuleError, match="cannot read the rules file"):
        load_rules(tmp_path / "absent.toml")


def test_an_engine_refuses_duplicate_ids() -> None:
    rule = parse_rules(EMA_RULE)[0]
    with pytest.raises(SignalRuleError, match="duplicate rule id"):
        SignalEngine([rule, rule])


# Small integers make ties (touches, resting on the line) frequent; None is warming up.
LINE_VALUE = st.one_of(st.none(), st.integers(-3, 3).map(float))


@given(st.lists(st.tuples(LINE_VALUE, LINE_VALUE), min_size=1, max_size=40))
def test_a_crossover_fires_only_where_the_side_of_fast_minus_slow_changes(
    pairs: list[tuple[float | None, float | None]],
) -> None:
    engine = SignalEngine(parse_rules(EMA_RULE))
    sequence: list[Candle] = []
    for fast, slow in pairs:
        values: dict[str, Any] = {"atr_14": 1.0}
        if fast is not None:
            values["ema_12"] = fast
        if slow is not None:
            values["ema_26"] = slow
        sequence.append((100.0, values))

    fired = {index: signal for index, signal in run(engine, sequence)}

    def side(index: int) -> bool | None:
        fast, slow = pairs[index]
        return None if fast is None or slow is None else fast - slow >= 0

    for index in range(1, len(pairs)):
        before, now = side(index - 1), side(index)
        if before is None or now is None or before == now:
            assert index not in fired
        else:
            assert fired[index].direction == (1 if now else -1)
            assert 0 < fired[index].strength <= 1
    assert 0 not in fired
