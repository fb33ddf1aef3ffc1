"""API keys: `sfk_<id>_<secret>`, stored as sha256 of the secret, verified in constant time.

The secret has 256 bits of randomness, so a plain SHA-256 (not a slow password hash) is
the right tool: nothing can be guessed offline, and verification stays cheap per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from clickhouse_connect.driver.asyncclient import AsyncClient

PREFIX = "sfk"
CACHE_SECONDS = 10.0


@dataclass(frozen=True)
class NewKey:
    """A freshly created key: `token` is shown once and never stored."""

    key_id: str
    name: str
    token: str


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token, else None."""
    parts = token.strip().split("_")
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class ApiKeyStore:
    """Keys in the warehouse's `api_keys` table, with a short cache for verification."""

    def __init__(self, client: AsyncClient, database: str) -> None:
        self.client = client
        self.table = f"{database}.api_keys"
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def create(self, name: str) -> NewKey:
        """A new key; only its hash is written."""
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32).replace("_", "-")
        await self.client.insert(
            self.table, [[key_id, name, _hash(secret)]], column_names=["key_id", "name", "key_hash"]
        )
        return NewKey(key_id, name, f"{PREFIX}_{key_id}_{secret}")

    async def revoke(self, key_id: str) -> bool:
        """Mark a key revoked; False if there is no such key."""
        rows = await self._rows(key_id)
        if not rows:
            return False
        name, key_hash = rows[0][1], rows[0][2]
        await self.client.insert(
            self.table,
            [[key_id, name, key_hash, True]],
            column_names=["key_id", "name", "key_hash", "revoked"],
        )
        self._cache.pop(key_id, None)
        return True

    async def all_keys(self) -> list[tuple[str, str, bool]]:
        """(id, name, revoked) of every key."""
        result = await self.client.query(
            f"SELECT key_id, name, revoked FROM {self.table} FINAL ORDER BY created_at"
        )
        return [(str(r[0]), str(r[1]), bool(r[2])) for r in result.result_rows]

    async def verify(self, token: str) -> str | None:
        """The key id when `token` is a valid, unrevoked key, else None."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        cached = self._cache.get(key_id)
        if cached is None or time.monotonic() - cached[0] > CACHE_SECONDS:
            rows = await self._rows(key_id)
            stored = str(rows[0][2]) if rows and not rows[0][3] else None
            self._cache[key_id] = cached = (time.monotonic(), stored)
        stored_hash = cached[1]
        if stored_hash is None or not hmac.compare_digest(stored_hash, _hash(secret)):
            return None
        return key_id

    async def _rows(self, key_id: str) -> list[tuple[object, ...]]:
        result = await self.client.query(
            f"SELECT key_id, name, key_hash, revoked FROM {self.table} FINAL "
            "WHERE key_id = {key_id:String}",
            parameters={"key_id": key_id},
        )
        return [tuple(row) for row in result.result_rows]
