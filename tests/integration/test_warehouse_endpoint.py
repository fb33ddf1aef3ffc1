"""The embedded warehouse, started as a process and driven only through clickhouse-connect.

Every test talks to `python -m sigflow.stack.warehouse` over HTTP exactly as sigflow code does
to a real ClickHouse server, so a pass here means the client needs no special case.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib.util
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path

import clickhouse_connect
import lz4.frame
import numpy as np
import pytest
import zstandard
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from sigflow.stack.process import free_port

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD_ENV = "SIGFLOW_WAREHOUSE_PASSWORD"
START_TIMEOUT_S = 60.0
ROWS = 100_000
BASE_TS = datetime(2024, 1, 1, tzinfo=UTC)
TRADE_COLUMNS = ["ts", "symbol", "price", "id"]
MAX_THREADS = "SELECT value FROM system.settings WHERE name = 'max_threads'"
DECODE = {"gzip": gzip.decompress, "zstd": zstandard.decompress, "lz4": lz4.frame.decompress}


def _wait_until_ready(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"warehouse exited with {process.returncode}:\n{log_path.read_text()}")
        ping = f"http://127.0.0.1:{port}/ping"
        with contextlib.suppress(OSError), urllib.request.urlopen(ping, timeout=1) as response:
            if response.read() == b"Ok.\n":
                return
        time.sleep(0.1)
    pytest.fail(f"warehouse did not answer /ping in {START_TIMEOUT_S}s:\n{log_path.read_text()}")


@contextlib.contextmanager
def running_warehouse(data_dir: Path, password: str | None = None) -> Iterator[int]:
    """Start the warehouse on a free port, yield the port, stop it with SIGTERM."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    if password:
        env[PASSWORD_ENV] = password
    log_path = data_dir.with_name(f"{data_dir.name}-{port}.log")
    command = [sys.executable, "-m", "sigflow.stack.warehouse", "--path", str(data_dir)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_ready(port, process, log_path)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def warehouse_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with running_warehouse(tmp_path_factory.mktemp("warehouse") / "data") as port:
        yield port


@pytest.fixture(scope="module")
def client(warehouse_port: int) -> Iterator[Client]:
    with clickhouse_connect.get_client(host="127.0.0.1", port=warehouse_port) as ch:
        yield ch


def _http(
    port: int, params: dict[str, str], headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    """A raw GET, for what clickhouse-connect hides: status, headers and undecoded body."""
    url = f"http://127.0.0.1:{port}/?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def _trades(rows: int) -> list[list[object]]:
    """Column-oriented trades: ts, symbol, price, id."""
    return [
        [BASE_TS + timedelta(milliseconds=i) for i in range(rows)],
        ["BTC-USDT" if i % 2 else "ETH-USDT" for i in range(rows)],
        [float(i) / 4 for i in range(rows)],
        list(range(rows)),
    ]


def _create_trades(client: Client, table: str) -> None:
    client.command(
        f"CREATE TABLE {table} (ts DateTime64(3, 'UTC'), symbol LowCardinality(String), "
        "price Float64, id UInt64) ENGINE = MergeTree ORDER BY (symbol, ts)"
    )


def test_ping_answers_ok(warehouse_port: int, client: Client) -> None:
    assert client.ping()
    with urllib.request.urlopen(f"http://127.0.0.1:{warehouse_port}/ping") as response:
        assert response.read() == b"Ok.\n"


def test_output_is_tab_separated_unless_a_format_is_asked_for(warehouse_port: int) -> None:
    status, headers, body = _http(warehouse_port, {"query": "SELECT 1 AS n, 'a\tb' AS s"})
    assert (status, headers["X-ClickHouse-Format"], body) == (200, "TabSeparated", b"1\ta\\tb\n")
    assert headers["X-ClickHouse-Timezone"] == "UTC"
    assert headers["X-ClickHouse-Query-Id"]
    _, headers, body = _http(
        warehouse_port, {"query": "SELECT 1 AS n", "default_format": "JSONEachRow"}
    )
    assert (headers["X-ClickHouse-Format"], body) == ("JSONEachRow", b'{"n":1}\n')
    _, headers, body = _http(
        warehouse_port, {"query": "SELECT 1 AS n FORMAT CSV", "default_format": "JSON"}
    )
    assert (headers["X-ClickHouse-Format"], body) == ("CSV", b"1\n")


def test_select_binds_server_side_parameters(client: Client) -> None:
    result = client.query(
        "SELECT {sym:String} AS sym, {qty:Float64} * 2 AS qty, {ts:DateTime64(3)} AS ts",
        parameters={
            "sym": "it's\tBTC-USDT",
            "qty": 1.25,
            "ts": BASE_TS + timedelta(milliseconds=5),
        },
    )
    sym, qty, ts = result.result_rows[0]
    assert (sym, qty) == ("it's\tBTC-USDT", 2.5)
    assert ts.replace(tzinfo=UTC) == BASE_TS + timedelta(milliseconds=5)


def test_empty_result_keeps_its_columns(client: Client) -> None:
    query = "SELECT toUInt64(1) AS id, toLowCardinality({sym:String}) AS symbol WHERE 0"
    result = client.query(query, parameters={"sym": "BTC-USDT"})
    assert (result.column_names, result.result_rows) == (("id", "symbol"), [])
    assert [t.name for t in result.column_types] == ["UInt64", "LowCardinality(String)"]


def test_long_parameters_sent_as_multipart_form_are_bound(client: Client) -> None:
    symbols = [f"SYM{i:05d}-USDT" for i in range(600)]  # past the client's 4 KiB URL limit
    result = client.query(
        "SELECT length({syms:Array(String)}), has({syms:Array(String)}, {last:String})",
        parameters={"syms": symbols, "last": symbols[-1]},
    )
    assert result.first_row == (600, True)


def test_database_parameter_picks_the_default_database(warehouse_port: int, client: Client) -> None:
    client.command("CREATE DATABASE IF NOT EXISTS sigflow_db")
    client.command("CREATE TABLE sigflow_db.marker (x UInt8) ENGINE = MergeTree ORDER BY x")
    with clickhouse_connect.get_client(
        host="127.0.0.1", port=warehouse_port, database="sigflow_db"
    ) as db:
        assert db.command("SELECT currentDatabase()") == "sigflow_db"
        db.insert("marker", [[7]], column_names=["x"])
        assert db.query("SELECT x FROM marker").result_rows == [(7,)]
    assert client.command("SELECT currentDatabase()") == "default"
    with pytest.raises(DatabaseError, match="UNKNOWN_DATABASE"):
        clickhouse_connect.get_client(host="127.0.0.1", port=warehouse_port, database="no_such_db")
    status, headers, _ = _http(warehouse_port, {"query": "SELECT 1", "database": "no_such_db"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "81")


def test_native_insert_of_100k_rows_reads_back(client: Client) -> None:
    _create_trades(client, "trades_100k")
    summary = client.insert(
        "trades_100k",
        _trades(ROWS),
        column_names=TRADE_COLUMNS,
        column_oriented=True,
    )
    assert summary.written_rows == ROWS
    result = client.query("SELECT id, symbol, price FROM trades_100k ORDER BY id")
    assert result.row_count == ROWS
    assert result.result_rows[:2] == [(0, "ETH-USDT", 0.0), (1, "BTC-USDT", 0.25)]
    assert result.result_rows[-1] == (ROWS - 1, "BTC-USDT", (ROWS - 1) / 4)
    array = client.query_np("SELECT id, price FROM trades_100k ORDER BY id")
    assert np.array_equal(array["id"], np.arange(ROWS))
    assert np.array_equal(array["price"], np.arange(ROWS) / 4)
    if importlib.util.find_spec("pandas"):
        frame = client.query_df(
            "SELECT symbol, count() AS n FROM trades_100k GROUP BY symbol ORDER BY symbol"
        )
        assert frame.to_dict("records") == [
            {"symbol": "BTC-USDT", "n": ROWS // 2},
            {"symbol": "ETH-USDT", "n": ROWS // 2},
        ]


def test_datetime64_utc_round_trips_milliseconds(client: Client) -> None:
    client.command(
        "CREATE TABLE ts_round_trip (ts DateTime64(3, 'UTC')) ENGINE = MergeTree ORDER BY ts"
    )
    stamps = [BASE_TS + timedelta(milliseconds=ms) for ms in (0, 1, 999, 86_400_123)]
    client.insert("ts_round_trip", [[ts] for ts in stamps], column_names=["ts"])
    read = [row[0] for row in client.query("SELECT ts FROM ts_round_trip ORDER BY ts").result_rows]
    assert [ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts for ts in read] == stamps
    millis = client.query("SELECT toUnixTimestamp64Milli(ts) FROM ts_round_trip ORDER BY ts")
    assert [row[0] for row in millis.result_rows] == [int(ts.timestamp() * 1000) for ts in stamps]


def test_insert_deduplication_token_deduplicates_a_repeated_insert(client: Client) -> None:
    client.command(
        "CREATE TABLE dedup (id UInt64, symbol String) ENGINE = MergeTree ORDER BY id "
        "SETTINGS non_replicated_deduplication_window = 1000"
    )

    def insert(rows: list[list[object]], token: str) -> None:
        client.insert(
            "dedup",
            rows,
            column_names=["id", "symbol"],
            settings={"insert_deduplication_token": token},
        )

    batch = [[1, "BTC-USDT"], [2, "ETH-USDT"]]
    insert(batch, "batch-1")
    insert(batch, "batch-1")
    assert client.command("SELECT count() FROM dedup") == 2
    insert([[3, "SOL-USDT"]], "batch-1")  # the token, not the content, identifies the batch
    assert client.command("SELECT count() FROM dedup") == 2
    insert(batch, "batch-2")
    assert client.command("SELECT count() FROM dedup") == 4


def test_settings_apply_to_one_query_only(client: Client) -> None:
    assert client.command(MAX_THREADS, settings={"max_threads": 3}) == 3
    assert client.command(MAX_THREADS) != 3
    as_json = "SELECT toUInt64(1) AS n FORMAT JSONEachRow"
    quoting = {"output_format_json_quote_64bit_integers": 1}
    assert client.raw_query(as_json, settings=quoting) == b'{"n":"1"}\n'
    assert client.raw_query(as_json) == b'{"n":1}\n'


def test_errors_raise_database_error_with_the_clickhouse_message(
    warehouse_port: int, client: Client
) -> None:
    with pytest.raises(DatabaseError, match=r"no_such_table.*UNKNOWN_TABLE") as missing:
        client.query("SELECT * FROM no_such_table")
    assert missing.value.code == 60
    with pytest.raises(DatabaseError, match="SYNTAX_ERROR") as syntax:
        client.command("SELEC 1")
    assert syntax.value.code == 62
    status, headers, body = _http(warehouse_port, {"query": "SELEC 1"})
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")
    assert body.startswith(b"Code: 62. DB::Exception: Syntax error")
    client.command("CREATE TABLE broken_insert (x UInt32) ENGINE = MergeTree ORDER BY x")
    with pytest.raises(DatabaseError, match=r"While executing Native\. \(\w+\) \(version") as bad:
        client.raw_insert("broken_insert", ["x"], b"\x01\x05", fmt="Native")
    assert bad.value.code in (32, 33)  # ATTEMPT_TO_READ_AFTER_EOF, CANNOT_READ_ALL_DATA
    assert client.command("SELECT 1") == 1  # the failed insert released the engine


def test_concurrent_clients_never_see_each_others_settings(warehouse_port: int) -> None:
    def run(threads: int) -> list[object]:
        with clickhouse_connect.get_client(host="127.0.0.1", port=warehouse_port) as ch:
            return [ch.command(MAX_THREADS, settings={"max_threads": threads}) for _ in range(20)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(run, range(1, 9))) == [[n] * 20 for n in range(1, 9)]


def test_ping_answers_while_a_slow_query_runs(warehouse_port: int, client: Client) -> None:
    with ThreadPoolExecutor(max_workers=1) as pool:
        slow = pool.submit(client.command, "SELECT sleep(1)")
        time.sleep(0.2)
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{warehouse_port}/ping") as response:
            assert response.read() == b"Ok.\n"
        assert not slow.done() and time.monotonic() - started < 0.5
        assert slow.result() == 0


async def test_async_client_inserts_and_selects_100k_rows(warehouse_port: int) -> None:
    async with await clickhouse_connect.get_async_client(
        host="127.0.0.1", port=warehouse_port
    ) as ch:
        await ch.command(
            "CREATE TABLE async_trades (ts DateTime64(3, 'UTC'), symbol LowCardinality(String), "
            "price Float64, id UInt64) ENGINE = MergeTree ORDER BY (symbol, ts)"
        )
        summary = await ch.insert(
            "async_trades",
            _trades(ROWS),
            column_names=TRADE_COLUMNS,
            column_oriented=True,
        )
        assert summary.written_rows == ROWS
        result = await ch.query("SELECT id, price FROM async_trades ORDER BY id")
        assert result.row_count == ROWS
        assert result.result_rows[-1] == (ROWS - 1, (ROWS - 1) / 4)
        symbols = ["BTC-USDT", *(f"SYM{i:05d}-USDT" for i in range(600))]  # a multipart form
        params = {"syms": symbols}
        count = await ch.query(
            "SELECT count() FROM async_trades WHERE symbol IN {syms:Array(String)}",
            parameters=params,
        )
        assert count.first_row == (ROWS // 2,)


@pytest.mark.parametrize("codec", [None, "gzip", "zstd", "lz4"])
def test_compression_round_trips_in_both_directions(warehouse_port: int, codec: str | None) -> None:
    table = f"compressed_{codec or 'none'}"
    with clickhouse_connect.get_client(
        host="127.0.0.1", port=warehouse_port, compress=codec or False
    ) as ch:
        assert (ch.compression, ch.write_compression) == (codec, codec)
        _create_trades(ch, table)
        ch.insert(
            table,
            _trades(10_000),
            column_names=TRADE_COLUMNS,
            column_oriented=True,
        )
        assert ch.query(f"SELECT sum(id), count() FROM {table}").first_row == (49_995_000, 10_000)
        ids = ch.query_np(f"SELECT id FROM {table} ORDER BY id")
        assert np.array_equal(ids.ravel(), np.arange(10_000))
    query = {"query": "SELECT number FROM numbers(1000) FORMAT TabSeparated"}
    expected = "".join(f"{n}\n" for n in range(1000)).encode()
    _, headers, body = _http(warehouse_port, query, {"Accept-Encoding": codec or "gzip"})
    assert "Content-Encoding" not in headers and body == expected  # no enable_http_compression
    _, headers, body = _http(
        warehouse_port,
        {**query, "enable_http_compression": "1"},
        {"Accept-Encoding": codec or "identity"},
    )
    assert headers.get("Content-Encoding") == codec
    assert (DECODE[codec](body) if codec else body) == expected


def test_data_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with (
        running_warehouse(data_dir) as port,
        clickhouse_connect.get_client(host="127.0.0.1", port=port) as ch,
    ):
        _create_trades(ch, "kept")
        ch.insert(
            "kept",
            _trades(1000),
            column_names=TRADE_COLUMNS,
            column_oriented=True,
        )
    with (
        running_warehouse(data_dir) as port,
        clickhouse_connect.get_client(host="127.0.0.1", port=port) as ch,
    ):
        assert ch.query("SELECT count(), sum(id) FROM kept").first_row == (1000, 499_500)


def test_password_is_required_when_configured(tmp_path: Path) -> None:
    secret = "s3cret-pass"
    with running_warehouse(tmp_path / "data", password=secret) as port:
        with pytest.raises(DatabaseError, match="AUTHENTICATION_FAILED") as denied:
            clickhouse_connect.get_client(host="127.0.0.1", port=port, password="wrong")
        assert denied.value.code == 516
        with clickhouse_connect.get_client(host="127.0.0.1", port=port, password=secret) as ch:
            assert ch.command("SELECT 1") == 1
        by_headers = {"X-ClickHouse-User": "default", "X-ClickHouse-Key": secret}
        assert _http(port, {"query": "SELECT 2"}, by_headers)[2] == b"2\n"
        assert _http(port, {"query": "SELECT 2"})[0] == 403
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping") as response:
            assert response.read() == b"Ok.\n"  # health checks need no credentials
    logs = "".join(path.read_text() for path in tmp_path.glob("*.log"))
    assert "warehouse on http://127.0.0.1" in logs and secret not in logs
