"""Read a user's trade file for `sigflow ingest replay PATH`, streaming, row by row.

Formats, chosen by extension: CSV (`.csv`, `.csv.gz`), JSON Lines (`.jsonl`,
`.ndjson`, optionally `.gz`) and Parquet (`.parquet`). Required columns, matched
case-insensitively; others are ignored:

    exchange, symbol, trade_id, price, size, side, ts

Normalization, so files from different tools land in one shape:

- `exchange` lower-case (`Coinbase` -> `coinbase`);
- `symbol` upper-case with `/` or `_` read as the separator (`btc/usdt`, `BTC_USDT`
  -> `BTC-USDT`); a symbol without separator (`BTCUSDT`) is rejected, because where
  the base ends cannot be known without the exchange's symbol table;
- `side` lower-case; `b`/`s` are read as `buy`/`sell` (Kraken's abbreviations of the
  same taker side); anything else, e.g. `bid`/`ask`, which name the maker's side, is
  rejected rather than guessed;
- `price`, `size` plain decimal numbers (strings allowed: many exchanges send them so);
- `ts` epoch milliseconds as an integer, or ISO-8601 with a time of day (`Z`, an
  offset, or naive, meaning UTC; sub-millisecond digits are truncated). Integers
  outside 1973..2286 are rejected with a hint: they are seconds, microseconds or
  nanoseconds, and guessing the unit would silently shift trades in time.

Each row comes out as a validated `Trade` struct or a `RejectedRow` (line, raw text,
reason) for the dead-letter topic; a file that cannot be read at all (unknown
extension, missing columns, I/O or decompression failure) raises `TradeFileError`,
checked when `read_trade_file()` is called, before any row.
"""

from __future__ import annotations

import csv
import gzip
import math
import re
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO, Literal

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.exceptions import TradeFileError
from schemas.codec import codec_for
from schemas.events import Trade
from schemas.exceptions import SchemaError

REQUIRED_COLUMNS = ("exchange", "symbol", "trade_id", "price", "size", "side", "ts")
TRADE_CODEC = codec_for(Trade)
PARQUET_BATCH_ROWS = 65_536
# Epoch-ms integers outside this window are another unit (1973-03-03 .. 2286-11-20).
MIN_EPOCH_MS = 100_000_000_000
MAX_EPOCH_MS = 10_000_000_000_000

FileFormat = Literal["csv", "jsonl", "parquet"]
_FORMATS: dict[str, tuple[FileFormat, bool]] = {
    ".csv": ("csv", False),
    ".csv.gz": ("csv", True),
    ".jsonl": ("jsonl", False),
    ".jsonl.gz": ("jsonl", True),
    ".ndjson": ("jsonl", False),
    ".ndjson.gz": ("jsonl", True),
    ".parquet": ("parquet", False),
}


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that is not a valid trade: where it is, what it said, and why it failed.

    `line` is the 1-based line where the row starts (CSV, JSON Lines) or the 1-based
    row number (Parquet, whose `raw` is the row as JSON).
    """

    line: int
    raw: str
    reason: str


RowResult = msgspec.Struct | RejectedRow
Stamp = Callable[[], int]


def read_trade_file(path: Path, *, received_ts: int | None = None) -> Iterator[RowResult]:
    """Trades and rejected rows of `path` in file order, streamed.

    `received_ts` stamps every trade (for reproducible replays); None stamps each with
    the current time as it is read.
    """
    file_format, compressed = trade_file_format(path)
    stamp = _stamper(received_ts)
    if file_format == "parquet":
        return _parquet_rows(path, stamp)
    binary = _open_binary(path, compressed)
    try:
        if file_format == "csv":
            return _csv_rows(path, binary, stamp)
        return _jsonl_rows(path, binary, stamp)
    except BaseException:
        binary.close()
        raise


def trade_file_format(path: Path) -> tuple[FileFormat, bool]:
    """(format, gzip-compressed) of a trade file, from its extension."""
    name = path.name.lower()
    for suffix in sorted(_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return _FORMATS[suffix]
    known = ", ".join(_FORMATS)
    raise TradeFileError(f"unsupported file extension; expected one of {known}", path=path)


def _stamper(received_ts: int | None) -> Stamp:
    if received_ts is None:
        return lambda: time.time_ns() // 1_000_000
    if received_ts < 0:
        raise ValueError("received_ts must be epoch milliseconds >= 0")
    fixed = received_ts
    return lambda: fixed


def _open_binary(path: Path, compressed: bool) -> BinaryIO:
    try:
        if compressed:
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as exc:
        raise TradeFileError(f"cannot open: {exc}", path=path) from exc


def _check_columns(path: Path, names: Iterable[str], line: int | None = None) -> None:
    """Refuse the whole file when a required column is absent or named twice."""
    names = list(names)
    lowered = [name.strip().lower() for name in names]
    missing = [column for column in REQUIRED_COLUMNS if column not in lowered]
    repeated = sorted({name for name in lowered if lowered.count(name) > 1})
    if missing:
        raise TradeFileError(
            f"missing required columns {missing}; found {names}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}",
            path=path,
            line=line,
        )
    if repeated:
        raise TradeFileError(f"columns named more than once: {repeated}", path=path, line=line)


# ---- CSV ---------------------------------------------------------------------------


class _LineTap:
    """Feeds decoded lines to `csv.reader` and keeps them: the raw text of each row."""

    def __init__(self, lines: Iterator[bytes]) -> None:
        self._lines = lines
        self._taken: list[str] = []
        self._undecodable = False
        self.line = 0

    def __iter__(self) -> _LineTap:
        return self

    def __next__(self) -> str:
        data = next(self._lines)
        self.line += 1
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", "replace")
            self._undecodable = True
        if self.line == 1:
            text = text.removeprefix("\ufeff")
        self._taken.append(text)
        return text

    def take(self) -> tuple[int, str, bool]:
        """(first line, raw text, had invalid UTF-8) of the row just parsed."""
        first = self.line - len(self._taken) + 1
        raw = "".join(self._taken).rstrip("\r\n")
        undecodable = self._undecodable
        self._taken.clear()
        self._undecodable = False
        return first, raw, undecodable


def _csv_rows(path: Path, binary: BinaryIO, stamp: Stamp) -> Iterator[RowResult]:
    tap = _LineTap(iter(binary))
    reader = csv.reader(tap, strict=True)
    try:
        header: list[str] = []
        while not header:
            header = next(reader)
            tap.take()
    except StopIteration:
        raise TradeFileError("empty file: no header row", path=path) from None
    except (csv.Error, OSError, EOFError, zlib.error) as exc:
        raise TradeFileError(f"cannot read the header: {exc}", path=path, line=tap.line) from exc
    _check_columns(path, header, line=tap.line)
    lowered = [name.strip().lower() for name in header]
    index = {column: lowered.index(column) for column in REQUIRED_COLUMNS}
    return _csv_body(path, binary, tap, reader, len(header), index, stamp)


def _csv_body(
    path: Path,
    binary: BinaryIO,
    tap: _LineTap,
    reader: Iterator[list[str]],
    width: int,
    index: dict[str, int],
    stamp: Stamp,
) -> Iterator[RowResult]:
    with binary:
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line, raw, _ = tap.take()
                yield RejectedRow(line, raw, f"malformed CSV: {exc}")
                continue
            except (OSError, EOFError, zlib.error) as exc:
                raise TradeFileError(f"read failed: {exc}", path=path, line=tap.line) from exc
            line, raw, undecodable = tap.take()
            if not fields:
                continue
            if undecodable:
                yield RejectedRow(line, raw, "not valid UTF-8")
            elif len(fields) != width:
                yield RejectedRow(line, raw, f"{len(fields)} fields, the header has {width}")
            else:
                values = {column: fields[i] for column, i in index.items()}
                yield _trade_or_rejection(values, line, raw, stamp)


# ---- JSON Lines --------------------------------------------------------------------


def _jsonl_rows(path: Path, binary: BinaryIO, stamp: Stamp) -> Iterator[RowResult]:
    lines = enumerate(iter(binary), start=1)
    try:
        head = next(((number, data) for number, data in lines if data.strip()), None)
    except (OSError, EOFError, zlib.error) as exc:
        raise TradeFileError(f"read failed: {exc}", path=path) from exc
    if head is None:
        binary.close()
        return iter(())
    number, data = head
    try:
        first = msgspec.json.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError):
        first = None
    if not isinstance(first, dict):
        raise TradeFileError(
            "not a JSON object: JSON Lines needs one trade object per line "
            "(a JSON array or pretty-printed JSON is not JSON Lines)",
            path=path,
            line=number,
        )
    _check_columns(path, first, line=number)
    return _jsonl_body(path, binary, chain([(number, data)], lines), stamp)


def _jsonl_body(
    path: Path, binary: BinaryIO, lines: Iterator[tuple[int, bytes]], stamp: Stamp
) -> Iterator[RowResult]:
    number = 0
    with binary:
        while True:
            try:
                number, data = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError, zlib.error) as exc:
                raise TradeFileError(f"read failed: {exc}", path=path, line=number + 1) from exc
            if not data.strip():
                continue
            raw = data.decode("utf-8", "replace").rstrip("\r\n")
            try:
                record = msgspec.json.decode(data)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                yield RejectedRow(number, raw, f"not valid JSON: {exc}")
                continue
            if not isinstance(record, dict):
                yield RejectedRow(number, raw, "not a JSON object")
                continue
            values = {key.strip().lower(): value for key, value in record.items()}
            yield _trade_or_rejection(values, number, raw, stamp)


# ---- Parquet -----------------------------------------------------------------------


def _parquet_rows(path: Path, stamp: Stamp) -> Iterator[RowResult]:
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise TradeFileError(f"not a readable Parquet file: {exc}", path=path) from exc
    names = parquet.schema_arrow.names
    try:
        _check_columns(path, names)
    except TradeFileError:
        parquet.close()
        raise
    actual = {name.strip().lower(): name for name in names}
    columns = [actual[column] for column in REQUIRED_COLUMNS]
    return _parquet_body(path, parquet, columns, stamp)


def _parquet_body(
    path: Path, parquet: pq.ParquetFile, columns: list[str], stamp: Stamp
) -> Iterator[RowResult]:
    number = 0
    with parquet:
        batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as exc:
                raise TradeFileError(f"read failed: {exc}", path=path, line=number + 1) from exc
            lists = [_parquet_values(batch.column(name)) for name in columns]
            for row in zip(*lists, strict=True):
                number += 1
                values = dict(zip(REQUIRED_COLUMNS, row, strict=True))
                yield _trade_or_rejection(values, number, None, stamp)


def _parquet_values(column: pa.Array) -> list[Any]:
    """Python values of a column; Arrow timestamps become epoch ms (naive read as UTC)."""
    if pa.types.is_timestamp(column.type):
        millis = pc.cast(column, pa.timestamp("ms", column.type.tz), safe=False)
        return pc.cast(millis, pa.int64()).to_pylist()  # type: ignore[no-any-return]
    return column.to_pylist()  # type: ignore[no-any-return]


# ---- normalization -----------------------------------------------------------------

_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_SYMBOL = re.compile(r"[A-Z0-9]+-[A-Z0-9]+")
_SIDES = {"buy": "buy", "sell": "sell", "b": "buy", "s": "sell"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)


def _trade_or_rejection(
    values: Mapping[str, Any], line: int, raw: str | None, stamp: Stamp
) -> RowResult:
    try:
        fields = {
            "exchange": _exchange(values.get("exchange")),
            "symbol": _symbol(values.get("symbol")),
            "trade_id": _trade_id(values.get("trade_id")),
            "price": _number(values.get("price"), "price"),
            "size": _number(values.get("size"), "size"),
            "side": _side(values.get("side")),
            "ts": _timestamp(values.get("ts")),
            "received_ts": stamp(),
        }
        return TRADE_CODEC.build(**fields)
    except (ValueError, SchemaError) as exc:
        if raw is None:
            row = {column: values.get(column) for column in REQUIRED_COLUMNS}
            raw = msgspec.json.encode(row, enc_hook=str).decode()
        return RejectedRow(line, raw, str(exc))


def _text(value: Any, column: str) -> str:
    text = value.strip() if isinstance(value, str) else None
    if not text:
        if value is None or text == "":
            raise ValueError(f"{column} is missing or empty")
        raise ValueError(f"{column} must be text, got {value!r}")
    return text


def _exchange(value: Any) -> str:
    exchange = _text(value, "exchange").lower()
    if not re.fullmatch(r"[a-z0-9_]+", exchange):
        raise ValueError(f"exchange {value!r} is not a lower-case id like 'coinbase'")
    return exchange


def _symbol(value: Any) -> str:
    symbol = _text(value, "symbol").upper().replace("/", "-").replace("_", "-")
    if _SYMBOL.fullmatch(symbol):
        return symbol
    if symbol.isalnum():
        raise ValueError(
            f"symbol {value!r} has no separator; write it as BASE-QUOTE, BASE/QUOTE or "
            "BASE_QUOTE (where the base ends cannot be guessed)"
        )
    raise ValueError(f"symbol {value!r} is not BASE-QUOTE")


def _side(value: Any) -> str:
    side = _SIDES.get(_text(value, "side").lower())
    if side is None:
        raise ValueError(f"side {value!r} is not buy/sell (or b/s)")
    return side


def _trade_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return _text(value, "trade_id")


def _number(value: Any, column: str) -> float:
    if value is None or isinstance(value, str):
        if not _DECIMAL.fullmatch(text := _text(value, column)):
            raise ValueError(f"{column} {value!r} is not a plain decimal number")
        number = float(text)
    elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"{column} must be a number, got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"{column} must be finite, got {value!r}")
    return number


def _timestamp(value: Any) -> int:
    """Epoch ms from an epoch-ms integer or an ISO-8601 date-time."""
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return _plausible_epoch_ms(int(value))
    if isinstance(value, bool):
        raise ValueError(f"ts must be epoch ms or ISO-8601, got {value!r}")
    if isinstance(value, int):
        return _plausible_epoch_ms(value)
    if isinstance(value, float | Decimal):
        return _whole_epoch_ms(value, value)
    text = _text(value, "ts")
    if _INTEGER.fullmatch(text):
        return _plausible_epoch_ms(int(text))
    if _DECIMAL.fullmatch(text):
        return _whole_epoch_ms(Decimal(text), value)
    if "T" not in text.upper() and " " not in text:
        raise ValueError(f"ts {value!r} has no time of day; give epoch ms or ISO-8601")
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"ts {value!r} is neither epoch ms nor ISO-8601") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _plausible_epoch_ms((moment - _EPOCH) // _MILLISECOND)


def _whole_epoch_ms(number: float | Decimal, value: Any) -> int:
    """A number that is a whole epoch ms, as written by tools that store ints as floats."""
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"ts {value!r} is not a whole number of epoch milliseconds")
    return _plausible_epoch_ms(int(number))


def _plausible_epoch_ms(value: int) -> int:
    if value < MIN_EPOCH_MS:
        hint = " (looks like epoch seconds)" if value >= 100_000_000 else ""
        raise ValueError(f"ts {value} is before 1973 as epoch ms{hint}")
    if value >= MAX_EPOCH_MS:
        raise ValueError(f"ts {value} is after 2286 as epoch ms (looks like µs or ns)")
    return value
