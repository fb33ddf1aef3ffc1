"""An Ethereum JSON-RPC client over httpx: single and batch calls, retries with back-off.

Transport failures, HTTP 429 (honouring Retry-After) and 5xx are retried with
exponential back-off and jitter; a JSON-RPC error object is not (the node answered, and
the same call would get the same answer) and raises `RpcError` with the node's message.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx

from ingest.chain.exceptions import MalformedRpcDataError, RpcError, RpcTransportError
from ingest.chain.hexvalues import quantity
from ingest.chain.transfers import TRANSFER_TOPIC

BACKOFF_START_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0
RETRIED_STATUS = frozenset({429, 500, 502, 503, 504})


def redacted(url: str) -> str:
    """`scheme://host:port` of an RPC URL: provider URLs carry API keys in path or query."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    hidden = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


class JsonRpcClient:
    """One node; `async with` opens and closes its connection pool."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.name = redacted(url)
        self.retries = retries
        self._ids = itertools.count(1)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)

    async def __aenter__(self) -> JsonRpcClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # -- calls ---------------------------------------------------------------------------

    async def call(self, method: str, params: Sequence[Any] = ()) -> Any:
        """One call's result."""
        [result] = await self.batch([(method, params)])
        return result

    async def batch(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Results of several calls in one HTTP request, in the order of `calls`."""
        if not calls:
            return []
        requests = [
            {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": list(params)}
            for method, params in calls
        ]
        body: Any = requests if len(requests) > 1 else requests[0]
        answer = await self._post(body, calls[0][0])
        replies = answer if isinstance(answer, list) else [answer]
        by_id = {reply.get("id"): reply for reply in replies if isinstance(reply, dict)}
        results = []
        for request in requests:
            reply = by_id.get(request["id"])
            if reply is None:
                raise MalformedRpcDataError(f"no reply to {request['method']} in {answer!r:.200}")
            if (error := reply.get("error")) is not None:
                code = error.get("code") if isinstance(error, dict) else None
                message = error.get("message", error) if isinstance(error, dict) else error
                raise RpcError(str(request["method"]), code, str(message))
            if "result" not in reply:
                raise MalformedRpcDataError(f"{request['method']} reply has no result")
            results.append(reply["result"])
        return results

    async def _post(self, body: Any, method: str) -> Any:
        delay = BACKOFF_START_SECONDS
        for attempt in itertools.count():
            wait: float | None = None
            try:
                response = await self._http.post(self.url, json=body)
            except httpx.TransportError as exc:
                problem = f"{method}: {type(exc).__name__}: {exc}"
            else:
                if response.status_code not in RETRIED_STATUS:
                    return self._decode(response, method)
                problem = f"{method}: HTTP {response.status_code}"
                wait = _retry_after(response)
            if attempt >= self.retries:
                raise RpcTransportError(self.name, f"{problem} (after {attempt + 1} attempts)")
            await asyncio.sleep(wait if wait is not None else random.uniform(delay / 2, delay))
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)
        raise AssertionError("unreachable")

    def _decode(self, response: httpx.Response, method: str) -> Any:
        if response.status_code != 200:
            raise RpcTransportError(
                self.name, f"{method}: HTTP {response.status_code}: {response.text:.200}",
                retriable=False,
            )  # fmt: skip
        try:
            return response.json()
        except ValueError as exc:
            raise RpcTransportError(
                self.name, f"{method}: reply is not JSON: {response.text:.200}", retriable=False
            ) from exc

    # -- the methods the chain feed uses -------------------------------------------------

    async def chain_id(self) -> int:
        return quantity(await self.call("eth_chainId"), "eth_chainId")

    async def block_number(self) -> int:
        return quantity(await self.call("eth_blockNumber"), "eth_blockNumber")

    async def blocks(self, numbers: range) -> list[Any]:
        """Raw block objects (transaction hashes only), one batch request."""
        return await self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])

    async def transfer_logs(self, numbers: range, tokens: Sequence[str]) -> list[Any]:
        """Raw Transfer logs of `tokens` in the block range."""
        logs = await self.call(
            "eth_getLogs",
            [
                {
                    "fromBlock": hex(numbers.start),
                    "toBlock": hex(numbers.stop - 1),
                    "address": list(tokens),
                    "topics": [TRANSFER_TOPIC],
                }
            ],
        )
        if not isinstance(logs, list):
            raise MalformedRpcDataError(f"eth_getLogs returned {logs!r:.200}")
        return logs
