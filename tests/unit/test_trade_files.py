"""Reading users' trade files: formats, normalization, rejected rows (ingest.files)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingest import files
from ingest.exceptions import TradeFileError
from ingest.files import RejectedRow, read_trade_file, trade_file_format

HEADER = "exchange,symbol,trade_id,price,size,side,ts\n"
TS = 1_571_302_800_000  # 2019-10-17T09:00:00Z
RECEIVED = 1_700_000_000_000


def read(path: Path) -> list[Any]:
    return list(read_trade_file(path, received_ts=RECEIVED))


def fields(trade: Any) -> tuple[Any, ...]:
    return (trade.exchange, trade.symbol, trade.trade_id, trade.price, trade.size, trade.side,
            trade.ts, trade.received_ts)  # fmt: skip


def rejected(results: list[Any]) -> list[RejectedRow]:
    return [result for result in results if isinstance(result, RejectedRow)]


def test_csv_with_epoch_ms_gives_trades(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + f"coinbase,BTC-USD,17,8035.88,0.5,buy,{TS}\n")
    [trade] = read(path)
    assert fields(trade) == ("coinbase", "BTC-USD", "17", 8035.88, 0.5, "buy", TS, RECEIVED)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-10-17T09:00:00Z", TS),
        ("2019-10-17T09:00:00.250Z", TS + 250),
        ("2019-10-17 09:00:00", TS),  # naive means UTC
        ("2019-10-17T11:00:00+02:00", TS),
        ("2019-10-17T09:00:00.123456789+00:00", TS + 123),  # truncated to ms
        ("20191017T090000Z", TS),
        (str(TS), TS),
        (f"{TS}.0", TS),  # integers written as floats by pandas
        ("1.5713028e12", TS),
    ],
)
def test_iso_and_epoch_timestamps_become_epoch_ms(tmp_path: Path, text: str, expected: int) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + f"coinbase,BTC-USD,1,1,1,buy,{text}\n")
    [trade] = read(path)
    assert trade.ts == expected


def test_normalization_of_exchange_symbol_and_side(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        HEADER
        + f"Coinbase,btc/usdt,1,1,1,BUY,{TS}\n"
        + f" BINANCE ,ETH_USDT,2,1,1,b,{TS}\n"
        + f"kraken,xbt-eur,3,1,1,S,{TS}\n"
        + f"kraken,XBT-EUR,4,1,1,Sell,{TS}\n"
    )
    trades = read(path)
    assert [(t.exchange, t.symbol, t.side) for t in trades] == [
        ("coinbase", "BTC-USDT", "buy"),
        ("binance", "ETH-USDT", "buy"),
        ("kraken", "XBT-EUR", "sell"),
        ("kraken", "XBT-EUR", "sell"),
    ]


def test_header_is_case_insensitive_in_any_order_with_extra_columns_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(
        b"\xef\xbb\xbfTS,Side,Size,Price,Trade_ID,Symbol,Exchange,venue_note\r\n"
        + f"{TS},sell,2,3,9,BTC-USD,coinbase,ignored\r\n".encode()
    )
    [trade] = read(path)
    assert fields(trade) == ("coinbase", "BTC-USD", "9", 3.0, 2.0, "sell", TS, RECEIVED)


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (f"coinbase,BTCUSDT,1,1,1,buy,{TS}", "has no separator"),
        (f"coinbase,BTC-USD-PERP,1,1,1,buy,{TS}", "is not BASE-QUOTE"),
        (f"coin base,BTC-USD,1,1,1,buy,{TS}", "not a lower-case id"),
        (f"coinbase,BTC-USD,1,1,1,bid,{TS}", "not buy/sell"),
        (f"coinbase,BTC-USD,1,abc,1,buy,{TS}", "price 'abc' is not a plain decimal"),
        (f"coinbase,BTC-USD,1,1_000,1,buy,{TS}", "not a plain decimal"),
        (f"coinbase,BTC-USD,1,-5,1,buy,{TS}", "price"),
        (f"coinbase,BTC-USD,1,1,0,buy,{TS}", "size"),
        (f"coinbase,BTC-USD,1,1,nan,buy,{TS}", "size 'nan' is not a plain decimal"),
        (f"coinbase,BTC-USD,1,1e999,1,buy,{TS}", "price must be finite"),
        (f"coinbase,BTC-USD,,1,1,buy,{TS}", "trade_id is missing or empty"),
        ("coinbase,BTC-USD,1,1,1,buy,1571302800", "looks like epoch seconds"),
        ("coinbase,BTC-USD,1,1,1,buy,1571302800000000", "looks like µs or ns"),
        ("coinbase,BTC-USD,1,1,1,buy,2019-10-17", "no time of day"),
        ("coinbase,BTC-USD,1,1,1,buy,yesterday 9am", "neither epoch ms nor ISO-8601"),
        ("coinbase,BTC-USD,1,1,1,buy,1571302800000.5", "not a whole number of epoch milliseconds"),
        ("coinbase,BTC-USD,1,1,1,buy", "6 fields, the header has 7"),
    ],
)
def test_bad_row_is_rejected_with_reason_and_reading_goes_on(
    tmp_path: Path, row: str, reason: str
) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + row + "\n" + f"coinbase,BTC-USD,2,1,1,buy,{TS}\n")
    bad, good = read(path)
    assert bad == RejectedRow(2, row, bad.reason)
    assert reason in bad.reason
    assert good.trade_id == "2"


def test_multiline_quoted_row_keeps_its_first_line_and_all_raw_text(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(
        HEADER + '"coinbase","BTC-USD","7","x\n1",1,buy,' + str(TS) + "\n"
        f"coinbase,BTC-USD,8,1,1,buy,{TS}\n"
    )
    bad, good = read(path)
    assert isinstance(bad, RejectedRow)
    assert bad.line == 2 and bad.raw == f'"coinbase","BTC-USD","7","x\n1",1,buy,{TS}'
    assert good.trade_id == "8"


def test_invalid_utf8_and_stray_quotes_are_rejected_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(
        HEADER.encode()
        + b"coinbase,BTC-USD,1,1,1,buy,\xff\xfe\n"
        + b'coinbase,BTC-USD,2,1,1,"b"uy,1571302800000\n'
        + f"coinbase,BTC-USD,3,1,1,buy,{TS}\n".encode()
    )
    utf8, quote, good = read(path)
    assert (utf8.line, utf8.reason) == (2, "not valid UTF-8")
    assert (quote.line, quote.reason.startswith("malformed CSV")) == (3, True)
    assert good.trade_id == "3"


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "\n" + f"coinbase,BTC-USD,1,1,1,bid,{TS}\n\n")
    [bad] = read(path)
    assert bad.line == 3


def test_gzipped_csv_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.CSV.GZ"
    with gzip.open(path, "wt") as file:
        file.write(HEADER + "".join(f"coinbase,BTC-USD,{i},1,1,buy,{TS + i}\n" for i in range(50)))
    assert [t.trade_id for t in read(path)] == [str(i) for i in range(50)]


def test_corrupt_gzip_tail_yields_rows_read_so_far_then_fails(tmp_path: Path) -> None:
    path = tmp_path / "t.csv.gz"
    body = HEADER + "".join(f"coinbase,BTC-USD,{i},1,1,buy,{TS + i}\n" for i in range(20_000))
    data = gzip.compress(body.encode())
    path.write_bytes(data[: len(data) // 2])
    results = read_trade_file(path, received_ts=RECEIVED)
    assert next(results).trade_id == "0"  # streamed: the first row comes before the damage
    with pytest.raises(TradeFileError, match="read failed"):
        list(results)


def test_missing_columns_fail_at_call_before_any_row(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("exchange,symbol,trade_id,size,side\n" + "coinbase,BTC-USD,1,1,buy\n")
    with pytest.raises(TradeFileError) as caught:
        read_trade_file(path)
    assert "missing required columns ['price', 'ts']" in str(caught.value)
    assert caught.value.path == path and caught.value.line == 1


def test_repeated_column_and_empty_file_fail(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER.strip() + ",Price\n")
    with pytest.raises(TradeFileError, match="more than once"):
        read_trade_file(path)
    path.write_text("")
    with pytest.raises(TradeFileError, match="empty file"):
        read_trade_file(path)


def test_unknown_extension_and_missing_file_fail(tmp_path: Path) -> None:
    with pytest.raises(TradeFileError, match="unsupported file extension"):
        read_trade_file(tmp_path / "t.xlsx")
    with pytest.raises(TradeFileError, match="unsupported file extension"):
        read_trade_file(tmp_path / "t.parquet.gz")
    with pytest.raises(TradeFileError, match="cannot open"):
        read_trade_file(tmp_path / "absent.csv")


def test_format_is_chosen_by_extension() -> None:
    assert trade_file_format(Path("a.ndjson.gz")) == ("jsonl", True)
    assert trade_file_format(Path("a.JSONL")) == ("jsonl", False)
    assert trade_file_format(Path("a.b.parquet")) == ("parquet", False)


def test_received_ts_defaults_to_read_time(tmp_path: Path) -> None:
    import time

    path = tmp_path / "t.csv"
    path.write_text(HEADER + f"coinbase,BTC-USD,1,1,1,buy,{TS}\n")
    before = time.time_ns() // 1_000_000
    [trade] = list(read_trade_file(path))
    assert before <= trade.received_ts <= time.time_ns() // 1_000_000


# ---- JSON Lines --------------------------------------------------------------------


def jsonl(*records: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


TRADE = {"exchange": "coinbase", "symbol": "BTC-USD", "trade_id": "1", "price": 2.5,
         "size": 0.1, "side": "sell", "ts": TS}  # fmt: skip


def test_jsonl_numbers_strings_and_iso_times_are_read(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        jsonl(
            TRADE,
            {**TRADE, "trade_id": 2, "price": "2.75", "size": "0.2", "ts": "2019-10-17T09:00:01Z"},
            {**TRADE, "Trade_ID": "3", "trade_id": None, "extra": [1, 2]},
        )
    )
    first, second, third = read(path)
    assert fields(first) == ("coinbase", "BTC-USD", "1", 2.5, 0.1, "sell", TS, RECEIVED)
    assert (second.trade_id, second.price, second.size, second.ts) == ("2", 2.75, 0.2, TS + 1000)
    assert third.trade_id == "3"


def test_jsonl_bad_lines_are_rejected_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    path.write_text(
        jsonl(
            TRADE,
            "",
            "{not json",
            "[1, 2]",
            {**TRADE, "price": True},
            {**TRADE, "trade_id": 1.5},
            {**TRADE, "ts": 1.5e12 + 0.5},
            {k: v for k, v in TRADE.items() if k != "side"},
            {**TRADE, "trade_id": "9"},
        )
    )
    results = read(path)
    assert [(r.line, r.reason[:22]) for r in rejected(results)] == [
        (3, "not valid JSON: JSON i"),
        (4, "not a JSON object"),
        (5, "price must be a number"),
        (6, "trade_id must be text,"),
        (7, "ts 1500000000000.5 is "),
        (8, "side is missing or emp"),
    ]
    assert rejected(results)[0].raw == "{not json"
    assert results[-1].trade_id == "9"


def test_jsonl_gz_is_read(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl(TRADE, {**TRADE, "trade_id": "2"}).encode()))
    assert [t.trade_id for t in read(path)] == ["1", "2"]


def test_jsonl_first_object_decides_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n" + jsonl({k: v for k, v in TRADE.items() if k not in ("ts", "price")}))
    with pytest.raises(
        TradeFileError, match=r"missing required columns \['price', 'ts'\]"
    ) as caught:
        read_trade_file(path)
    assert caught.value.line == 2


def test_json_array_file_is_not_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps([TRADE, TRADE], indent=2))
    with pytest.raises(TradeFileError, match="not JSON Lines"):
        read_trade_file(path)


def test_empty_jsonl_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n\n")
    assert read(path) == []


# ---- Parquet -----------------------------------------------------------------------


def parquet(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def base_columns(count: int) -> dict[str, Any]:
    return {
        "exchange": ["Coinbase"] * count,
        "symbol": ["btc/usd"] * count,
        "trade_id": [str(i) for i in range(count)],
        "price": [100.0 + i for i in range(count)],
        "size": [0.5] * count,
        "side": ["buy", "sell"] * (count // 2) + ["buy"] * (count % 2),
    }


def test_parquet_with_int_epoch_ms_streams_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "PARQUET_BATCH_ROWS", 3)
    table = pa.table({**base_columns(7), "ts": pa.array([TS + i for i in range(7)], pa.int64())})
    trades = read(parquet(tmp_path / "t.parquet", table))
    assert [t.trade_id for t in trades] == [str(i) for i in range(7)]
    assert fields(trades[0]) == ("coinbase", "BTC-USD", "0", 100.0, 0.5, "buy", TS, RECEIVED)


@pytest.mark.parametrize(
    "ts_type", [pa.timestamp("ns", "UTC"), pa.timestamp("us"), pa.timestamp("ms", "Asia/Tokyo")]
)
def test_parquet_timestamp_columns_become_epoch_ms(tmp_path: Path, ts_type: pa.DataType) -> None:
    per_unit = {"ns": 1_000_000, "us": 1_000, "ms": 1}[ts_type.unit]
    raw = pa.array([(TS + 1) * per_unit + per_unit // 2], pa.int64()).cast(ts_type)
    trades = read(parquet(tmp_path / "t.parquet", pa.table({**base_columns(1), "ts": raw})))
    assert trades[0].ts == TS + 1


def test_parquet_iso_strings_and_bad_rows(tmp_path: Path) -> None:
    columns = base_columns(3)
    columns["price"] = [1.0, None, 3.0]
    columns["ts"] = ["2019-10-17T09:00:00Z", "2019-10-17T09:00:01Z", "1571302800"]
    results = read(parquet(tmp_path / "t.parquet", pa.table(columns)))
    assert results[0].ts == TS
    missing, seconds = rejected(results)
    assert (missing.line, missing.reason) == (2, "price is missing or empty")
    assert json.loads(missing.raw)["trade_id"] == "1"
    assert seconds.line == 3 and "epoch seconds" in seconds.reason


def test_parquet_missing_columns_and_non_parquet_fail(tmp_path: Path) -> None:
    path = parquet(tmp_path / "t.parquet", pa.table(base_columns(1)))
    with pytest.raises(TradeFileError, match=r"missing required columns \['ts'\]"):
        read_trade_file(path)
    fake = tmp_path / "fake.parquet"
    fake.write_text(HEADER)
    with pytest.raises(TradeFileError, match="not a readable Parquet file"):
        read_trade_file(fake)
