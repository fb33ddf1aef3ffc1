"""Parsing the hex encodings of Ethereum JSON-RPC: quantities, 32-byte hashes, addresses.

Each parser takes the field name, so an error says which field of which object is bad.
"""

from __future__ import annotations

import re
from typing import Any

from ingest.chain.exceptions import MalformedRpcDataError

_QUANTITY = re.compile(r"^0x(0|[1-9a-fA-F][0-9a-fA-F]*)$")
_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_DATA = re.compile(r"^0x([0-9a-fA-F]{2})*$")


def field(obj: dict[str, Any], name: str, what: str) -> Any:
    """`obj[name]`, or a `MalformedRpcDataError` naming what lacks it."""
    if name not in obj or obj[name] is None:
        raise MalformedRpcDataError(f"{what} has no `{name}`")
    return obj[name]


def quantity(value: Any, name: str) -> int:
    """A QUANTITY (`0x`-prefixed hex without leading zeros) as an int."""
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise MalformedRpcDataError(f"`{name}` is not a hex quantity: {value!r}")
    return int(value, 16)


def hash32(value: Any, name: str) -> str:
    """A 32-byte hash, lower-case."""
    if not isinstance(value, str) or not _HASH.match(value):
        raise MalformedRpcDataError(f"`{name}` is not a 32-byte hex hash: {value!r}")
    return value.lower()


def address(value: Any, name: str) -> str:
    """A 20-byte address, lower-case."""
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise MalformedRpcDataError(f"`{name}` is not a 20-byte hex address: {value!r}")
    return value.lower()


def data(value: Any, name: str) -> bytes:
    """Unformatted DATA (`0x` and whole bytes) as bytes."""
    if not isinstance(value, str) or not _DATA.match(value):
        raise MalformedRpcDataError(f"`{name}` is not hex data: {value!r}")
    return bytes.fromhex(value[2:])
