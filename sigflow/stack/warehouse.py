"""Embedded warehouse: ClickHouse's HTTP interface in front of the in-process chdb engine.

The local stack runs no ClickHouse server, yet sigflow and its users keep talking unchanged
clickhouse-connect (sync or async, default options) to `http://127.0.0.1:8123`. Served here:
`/ping`; SQL in the `query` parameter and/or the body; `database`, `param_*`, `default_format`
and per-query settings; gzip/deflate/zstd/lz4 both ways; `X-ClickHouse-*` headers; errors with
ClickHouse's codes and HTTP statuses.

chdb 4.4 facts it relies on: binary data inlined after `INSERT ... FORMAT X` is cut short, so
those inserts go through `Session.send_insert`; `SET` lasts for the session, so a query's
settings are one `SET` before it and one reverting `SET` after it, under the engine lock;
`params=` binds `{name:Type}` from HTTP's escaped `param_*` text; a `FORMAT` clause in the SQL
beats the `fmt` argument; the timezone follows the host unless `session_timezone=UTC` pins it.

Limits: one engine session for every client (`SET`/`USE` statements outlive their request,
`session_id` is ignored, GET is not read-only); external data, `compress=1`/`decompress=1` and
`readonly` are refused; results are buffered, not streamed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import hmac
import json
import logging
import re
import threading
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import cast

import lz4.frame
import uvicorn
import zstandard
from chdb.session import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from sigflow.settings import get_settings

log = logging.getLogger(__name__)

DISPLAY_NAME = "sigflow-warehouse"
# URL parameters that steer the HTTP exchange (as do `http_*`); every other one is a setting.
_TRANSPORT = """query database default_format query_id session_id session_timeout session_check
user password quota_key role buffer_size wait_end_of_query client_protocol_version compress
decompress enable_http_compression send_progress_in_http_headers
cancel_http_readonly_queries_on_client_close"""
TRANSPORT_PARAMS = frozenset(_TRANSPORT.split())
# ClickHouse's exceptionCodeToHTTPStatus, keyed by the error name every message ends with.
_STATUS_OF_ERRORS = {
    400: """BAD_ARGUMENTS CANNOT_COMPILE_REGEXP CANNOT_PARSE_TEXT CANNOT_PARSE_ESCAPE_SEQUENCE
        CANNOT_PARSE_QUOTED_STRING CANNOT_PARSE_DATE CANNOT_PARSE_DATETIME CANNOT_PARSE_NUMBER
        CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING CANNOT_PARSE_IPV4 CANNOT_PARSE_IPV6 CANNOT_PARSE_UUID
        CANNOT_PARSE_INPUT_ASSERTION_FAILED DUPLICATE_COLUMN ILLEGAL_COLUMN UNKNOWN_ELEMENT_IN_AST
        UNKNOWN_TYPE_OF_AST_NODE THERE_IS_NO_COLUMN TOO_DEEP_AST TOO_BIG_AST SYNTAX_ERROR
        UNEXPECTED_AST_STRUCTURE INCORRECT_DATA TYPE_MISMATCH VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE""",
    401: "REQUIRED_PASSWORD",
    403: "UNKNOWN_USER WRONG_PASSWORD AUTHENTICATION_FAILED SET_NON_GRANTED_ROLE ACCESS_DENIED",
    404: """UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE UNKNOWN_STORAGE
        UNKNOWN_DATABASE UNKNOWN_SETTING UNKNOWN_DIRECTION_OF_SORTING UNKNOWN_AGGREGATE_FUNCTION
        UNKNOWN_FORMAT UNKNOWN_DATABASE_ENGINE UNKNOWN_TYPE_OF_QUERY UNKNOWN_ROLE""",
    408: "TIMEOUT_EXCEEDED",
    413: "QUERY_IS_TOO_LARGE",
    501: "NOT_IMPLEMENTED",
    503: "SOCKET_TIMEOUT CANNOT_OPEN_FILE CANNOT_SCHEDULE_TASK",
}
_HTTP_STATUS = {name: code for code, names in _STATUS_OF_ERRORS.items() for name in names.split()}
_ERROR_CODE = re.compile(r"Code: (\d+)\.")
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)$")
_VERSION_TRAILER = re.compile(r"\s*\(version [^)]*\)\s*$")
_SETTING_NAME = re.compile(r"[A-Za-z_]\w*")
# Like ClickHouse, inline data starts after the first newline that follows the format name.
_INSERT_WITH_DATA = re.compile(
    rb"\s*(INSERT\s+INTO\s+(?:TABLE\s+)?[\w.`\"]+\s*(?:\([^()]*\))?(?:\s*SETTINGS\s[^;]*?)?)"
    rb"\s*\bFORMAT\s+(\w+)[ \t\f]*\r?\n?",
    re.IGNORECASE | re.DOTALL,
)
_FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(\w+)(?:\s+SETTINGS\s[^;]*)?\s*;?\s*$", re.IGNORECASE)
_RESULT_STATEMENT = re.compile(
    r"(?:\s|--[^\n]*\n|/\*.*?\*/|\()*(SELECT|WITH|FROM|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS|CHECK)\b",
    re.IGNORECASE | re.DOTALL,
)
_BINARY_FORMATS = ("Native", "RowBinary", "Parquet", "Arrow", "ORC", "Avro", "MsgPack", "Protobuf")


def _lz4_decompress(data: bytes) -> bytes:
    """clickhouse-connect compresses each insert block into a frame of its own."""
    out = []
    while data:
        frame = lz4.frame.LZ4FrameDecompressor()
        out.append(frame.decompress(data))
        data = frame.unused_data
    return b"".join(out)


# zstd also gets a frame per insert block; zstandard's (de)compressors are not thread-safe.
_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "lz4": _lz4_decompress,
    "zstd": lambda data: (
        zstandard.ZstdDecompressor().decompressobj(read_across_frames=True).decompress(data)
    ),
}
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, compresslevel=3),
    "deflate": zlib.compress,
    "lz4": lz4.frame.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}
with contextlib.suppress(ImportError):
    import brotli

    _DECODERS["br"], _ENCODERS["br"] = brotli.decompress, brotli.compress


class ClickHouseError(Exception):
    """A failure in ClickHouse's shape, `Code: N. DB::Exception: text. (NAME)`, with its status."""

    def __init__(self, message: str) -> None:
        message = message[message.find("Code: ") :] if "Code: " in message else message
        message = _VERSION_TRAILER.sub("", message.strip())  # the response adds it back
        super().__init__(message)
        code, name = _ERROR_CODE.search(message), _ERROR_NAME.search(message)
        self.code = int(code.group(1)) if code else 1001  # STD_EXCEPTION
        self.status = _HTTP_STATUS.get(name.group(1) if name else "", 500)

    @classmethod
    def of(cls, code: int, name: str, text: str) -> ClickHouseError:
        """An error raised by this server rather than by the engine."""
        return cls(f"Code: {code}. DB::Exception: {text}. ({name})")


@dataclass
class Statement:
    """One request's SQL and what ClickHouse's HTTP handler reads from the URL around it."""

    sql: bytes
    database: str = "default"
    default_format: str = "TabSeparated"
    settings: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """A statement's response body, its format (None: no result set) and its summary."""

    body: bytes
    output_format: str | None
    summary: dict[str, int]


def _quote(value: str, quote: str = "'") -> str:
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


class Engine:
    """The one chdb session; its lock keeps USE, SET, the statement and the revert together."""

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._session = Session(f"{path}?session_timezone=UTC")
        self._lock = threading.Lock()
        self.version, self.timezone = self._text("SELECT version(), timezone()").split("\t")
        # chdb starts with some settings changed; reverting to them keeps its configuration.
        changed = self._text("SELECT name, value FROM system.settings WHERE changed")
        self._baseline = dict(line.split("\t", 1) for line in changed.splitlines())

    def _text(self, sql: str) -> str:
        return self._session.query(sql, "TabSeparated").bytes().decode().strip()

    def close(self) -> None:
        """Flush and release the engine once the last request finished."""
        with self._lock:
            self._session.close()

    def execute(self, statement: Statement) -> Outcome:
        """Run one statement in its database with its settings, serialized with all others."""
        if bad := [name for name in statement.settings if not _SETTING_NAME.fullmatch(name)]:
            raise ClickHouseError.of(115, "UNKNOWN_SETTING", f"Unknown setting {bad[0]!r}")
        apply = ", ".join(f"{k} = {_quote(v)}" for k, v in statement.settings.items())
        revert = ", ".join(
            f"{k} = {_quote(self._baseline[k]) if k in self._baseline else 'DEFAULT'}"
            for k in statement.settings
        )
        insert = _INSERT_WITH_DATA.match(statement.sql)
        with self._lock:
            try:
                self._session.query(f"USE {_quote(statement.database, '`')}", "TabSeparated")
                if apply:
                    self._session.query(f"SET {apply}", "TabSeparated")
                try:
                    return (
                        self._insert(insert, statement.sql) if insert else self._select(statement)
                    )
                finally:
                    if revert:
                        self._session.query(f"SET {revert}", "TabSeparated")
            except RuntimeError as exc:  # chdb's errors carry ClickHouse's message text
                raise ClickHouseError(str(exc)) from exc

    def _insert(self, insert: re.Match[bytes], sql: bytes) -> Outcome:
        with self._session.send_insert(insert[1].decode(), insert[2].decode()) as inserter:
            if data := sql[insert.end() :]:
                inserter.append(data)
            done = inserter.finish()
        summary = {"written_rows": done.rows_written, "written_bytes": done.bytes_written}
        return Outcome(b"", None, {**summary, "elapsed_ns": int(done.elapsed * 1e9)})

    def _select(self, statement: Statement) -> Outcome:
        try:
            sql = statement.sql.decode()
        except UnicodeDecodeError as exc:
            raise ClickHouseError.of(36, "BAD_ARGUMENTS", f"Query is not UTF-8: {exc}") from exc
        clause = _FORMAT_CLAUSE.search(sql)
        fmt = clause[1] if clause else statement.default_format
        result = self._session.query(sql, fmt, params=statement.params)
        summary = {
            "read_rows": result.storage_rows_read(),
            "read_bytes": result.storage_bytes_read(),
            "written_rows": result.rows_written(),
            "written_bytes": result.bytes_written(),
            "result_rows": result.rows_read(),
            "result_bytes": result.bytes_read(),
            "elapsed_ns": int(result.elapsed() * 1e9),
        }
        has_result = clause is not None or _RESULT_STATEMENT.match(sql) is not None
        body = result.bytes()
        if not body and fmt == "Native" and has_result:
            query = sql[: clause.start()] if clause else sql.rstrip().rstrip(";")
            body = self._native_header(query, statement.params)
        return Outcome(body, fmt if has_result else None, summary)

    def _native_header(self, query: str, params: dict[str, str]) -> bytes:
        """chdb sends no bytes for an empty Native result; ClickHouse sends the column headers."""
        try:
            described = self._session.query(
                f"DESCRIBE ({query})", "JSONCompactEachRow", params=params
            )
        except RuntimeError:  # not a SELECT (SHOW, EXISTS ...): no header to recover
            return b""
        columns = [json.loads(line)[:2] for line in described.bytes().splitlines()]
        block = bytearray(_leb128(len(columns)) + _leb128(0))  # column count, zero rows
        for name, type_name in columns:
            for text in (name.encode(), type_name.encode()):
                block += _leb128(len(text)) + text
        return bytes(block)


def _leb128(value: int) -> bytes:
    """The unsigned varint Native blocks use for counts and string lengths."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def _form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """clickhouse-connect moves the query and long `param_*` values into a multipart form."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    form = cast(EmailMessage, BytesParser(policy=HTTP).parsebytes(head + body))
    fields = {}
    for part in form.iter_parts():
        if part.get_filename():
            raise ClickHouseError.of(48, "NOT_IMPLEMENTED", "External data is not supported")
        value = cast(bytes, part.get_payload(decode=True)).decode()
        fields[str(part.get_param("name", header="content-disposition"))] = value
    return fields


def parse_statement(
    params: Mapping[str, str], headers: Mapping[str, str], body: bytes
) -> Statement:
    """Rebuild the statement as ClickHouse does: URL `query`, a newline, then the body."""
    encoding = headers.get("content-encoding", "").strip().lower() or "identity"
    if encoding != "identity":
        if encoding not in _DECODERS:
            raise ClickHouseError.of(36, "BAD_ARGUMENTS", f"Unknown Content-Encoding {encoding!r}")
        try:
            body = _DECODERS[encoding](body)
        except Exception as exc:  # every codec raises its own error type on corrupt input
            raise ClickHouseError.of(271, "CANNOT_DECOMPRESS", f"{encoding}: {exc}") from exc
    if headers.get("content-type", "").startswith("multipart/form-data"):
        params, body = {**params, **_form_fields(headers["content-type"], body)}, b""
    if "1" in (params.get("compress"), params.get("decompress")) or "readonly" in params:
        # readonly would also forbid the SET that reverts per-query settings
        raise ClickHouseError.of(
            48, "NOT_IMPLEMENTED", "compress, decompress, readonly unsupported"
        )
    url_sql = params.get("query", "").encode()
    statement = Statement(
        sql=url_sql + b"\n" + body if url_sql and body else url_sql or body,
        database=params.get("database") or "default",
        default_format=params.get("default_format") or "TabSeparated",
    )
    for key, value in params.items():
        if key.startswith("param_"):
            statement.params[key.removeprefix("param_")] = value
        elif key not in TRANSPORT_PARAMS and not key.startswith("http_"):
            statement.settings[key] = value
    return statement


def _response_encoding(params: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """As ClickHouse: compress only with enable_http_compression=1, first accepted codec."""
    if params.get("enable_http_compression", "0").lower() in ("1", "true"):
        for item in headers.get("accept-encoding", "").split(","):
            if (codec := item.split(";")[0].strip().lower()) in _ENCODERS:
                return codec
    return None


def _authenticate(request: Request, password: str | None) -> None:
    """Accept user `default` with the password by basic auth, X-ClickHouse-* headers or URL."""
    if password is None:
        return
    user = request.headers.get("x-clickhouse-user") or request.query_params.get("user")
    key = request.headers.get("x-clickhouse-key") or request.query_params.get("password")
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        with contextlib.suppress(ValueError):  # malformed base64 or UTF-8: fails below
            user, _, key = base64.b64decode(credentials, validate=True).decode().partition(":")
    user = user or "default"
    if user != "default" or not hmac.compare_digest((key or "").encode(), password.encode()):
        reason = "password is incorrect, or there is no user with such name"
        raise ClickHouseError.of(
            516, "AUTHENTICATION_FAILED", f"{user}: Authentication failed: {reason}"
        )


def _run_request(
    engine: Engine, params: Mapping[str, str], headers: Mapping[str, str], body: bytes
) -> tuple[Outcome, str | None]:
    """All CPU and engine work of one request, for a worker thread."""
    outcome = engine.execute(parse_statement(params, headers, body))
    if encoding := _response_encoding(params, headers):
        outcome.body = _ENCODERS[encoding](outcome.body)
    return outcome, encoding


async def _handle_ping(request: Request) -> Response:
    return PlainTextResponse("Ok.\n")


async def _handle_query(request: Request) -> Response:
    engine: Engine = request.app.state.engine
    params = dict(request.query_params)
    query_id = params.get("query_id") or str(uuid.uuid4())
    headers = {
        "X-ClickHouse-Query-Id": query_id,
        "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
        "X-ClickHouse-Timezone": engine.timezone,
    }
    try:
        _authenticate(request, request.app.state.password)
        body = await request.body()
        if request.method == "GET" and not body and "query" not in params:
            return PlainTextResponse("Ok.\n", headers=headers)
        args = (engine, params, request.headers, body)
        outcome, encoding = await asyncio.to_thread(_run_request, *args)
    except ClickHouseError as exc:
        error = exc
    except Exception as exc:  # a bug still answers in ClickHouse's shape, and is logged
        log.exception("query %s failed unexpectedly", query_id)
        error = ClickHouseError.of(1001, "STD_EXCEPTION", repr(exc))
    else:
        headers["X-ClickHouse-Summary"] = json.dumps(
            {k: str(v) for k, v in outcome.summary.items()}
        )
        if outcome.output_format:
            headers["X-ClickHouse-Format"] = outcome.output_format
        if encoding:
            headers["Content-Encoding"] = encoding
        binary = (outcome.output_format or "").startswith(_BINARY_FORMATS)
        media_type = "application/octet-stream" if binary else "text/plain"
        return Response(outcome.body, headers=headers, media_type=media_type)
    log.info("query %s failed with code %d", query_id, error.code)
    headers["X-ClickHouse-Exception-Code"] = str(error.code)
    return PlainTextResponse(f"{error} (version {engine.version})\n", error.status, headers=headers)


def create_app(path: Path, password: str | None = None) -> Starlette:
    """The ASGI app; the engine opens at startup and closes after the last request."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.engine = await asyncio.to_thread(Engine, path)
        try:
            yield
        finally:
            await asyncio.to_thread(app.state.engine.close)

    routes = [Route("/ping", _handle_ping), Route("/", _handle_query, methods=["GET", "POST"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.password = password
    return app


def serve(
    path: Path, host: str = "127.0.0.1", port: int = 8123, password: str | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; the password defaults to $SIGFLOW_WAREHOUSE_PASSWORD."""
    if password is None:
        password = get_settings().warehouse_password.get_secret_value() or None
    auth = "password required" if password else "no password"
    log.info("warehouse on http://%s:%d, data in %s, %s", host, port, path, auth)
    # No access log: URLs carry SQL and may carry a `password` parameter.
    app = create_app(path, password)
    uvicorn.run(
        app, host=host, port=port, log_level="warning", access_log=False, timeout_keep_alive=30
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Serve the embedded ClickHouse-compatible warehouse."
    )
    parser.add_argument("--path", type=Path, required=True, help="directory holding the data")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8123, help="port to listen on (default 8123)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve(args.path, args.host, args.port)
