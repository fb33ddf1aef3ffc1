"""Errors of the chain ingestor.

IngestError                 (ingest.exceptions)
└── ChainError              the chain feed cannot go on
    ├── RpcError            the node answered a call with a JSON-RPC error object
    ├── RpcTransportError   the node could not be reached (after the retries)
    ├── ChainIdMismatchError  the node serves another chain than configured
    ├── TokenListError      the tokens file cannot be used
    ├── ReorgTooDeepError   a reorg reaches below the remembered window
    └── MalformedRpcDataError  a block or log that does not parse (goes to the DLQ)
"""

from __future__ import annotations

from pathlib import Path

from ingest.exceptions import IngestError


class ChainError(IngestError):
    """The chain feed cannot go on."""


class RpcError(ChainError):
    """A JSON-RPC error object: `code` and `message` as the node sent them."""

    def __init__(self, method: str, code: int | None, message: str) -> None:
        super().__init__(f"{method} failed: {message} (JSON-RPC error {code})")
        self.method = method
        self.code = code
        self.message = message


class RpcTransportError(ChainError):
    """The node did not answer usefully (connection, timeout, HTTP status, not JSON)."""

    def __init__(self, url: str, reason: str, *, retriable: bool = True) -> None:
        super().__init__(f"JSON-RPC node at {url}: {reason}")
        self.retriable = retriable


class ChainIdMismatchError(ChainError):
    """`eth_chainId` of the node is not the configured chain id."""

    exit_code = 2

    def __init__(self, expected: int, actual: int, url: str) -> None:
        super().__init__(
            f"the node at {url} serves chain id {actual}, not {expected}: "
            "check --rpc-url and --chain-id"
        )
        self.expected = expected
        self.actual = actual


class TokenListError(ChainError):
    """A tokens file that cannot be read or validated."""

    exit_code = 2

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ReorgTooDeepError(ChainError):
    """The common ancestor lies below the window of blocks the follower remembers."""

    def __init__(self, number: int, window_start: int) -> None:
        super().__init__(
            f"reorg reaches below block {window_start}, the oldest one remembered "
            f"(mismatch seen at {number}); raise SIGFLOW_CHAIN_REORG_WINDOW"
        )
        self.number = number
        self.window_start = window_start


class MalformedRpcDataError(ChainError):
    """A block or log from the node that does not parse; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
