"""The token list: which ERC-20 contracts to follow, their symbols and decimals.

A TOML file (`[[tokens]]` tables) or a JSON file (`{"tokens": [...]}` or a bare list),
each token with `address`, `symbol` and `decimals`. Addresses are compared lower-case.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingest.chain.exceptions import TokenListError

# onchain_transfers.amount is Decimal256(30): 30 fraction digits at most (see the migration).
MAX_DECIMALS = 30


class Token(BaseModel):
    """One followed token contract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    address: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    symbol: str = Field(min_length=1, max_length=32)
    decimals: int = Field(ge=0, le=MAX_DECIMALS)

    @field_validator("address")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


@dataclass(frozen=True)
class TokenList:
    """Tokens by lower-case address."""

    tokens: dict[str, Token]

    def __iter__(self) -> Iterator[Token]:
        return iter(self.tokens.values())

    def __len__(self) -> int:
        return len(self.tokens)

    def get(self, address: str) -> Token | None:
        return self.tokens.get(address.lower())

    @property
    def addresses(self) -> list[str]:
        return list(self.tokens)


def _entries(path: Path, text: str) -> list[Any]:
    try:
        if path.suffix.lower() == ".toml":
            document: Any = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            document = json.loads(text)
        else:
            raise TokenListError(path, "unknown format: use a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise TokenListError(path, f"not valid {path.suffix[1:].upper()}: {exc}") from exc
    if isinstance(document, dict):
        if set(document) != {"tokens"}:
            raise TokenListError(path, "expected one top-level key `tokens` (a list of tokens)")
        document = document["tokens"]
    if not isinstance(document, list) or not document:
        raise TokenListError(path, "`tokens` must be a non-empty list")
    return document


def parse_token_list(path: Path, text: str) -> TokenList:
    """Validate a tokens file's text; errors name the entry and the field."""
    tokens: dict[str, Token] = {}
    for index, entry in enumerate(_entries(path, text), start=1):
        try:
            token = Token.model_validate(entry)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'entry'}: {error['msg']}"
                for error in exc.errors()
            )
            raise TokenListError(path, f"token #{index}: {problems}") from None
        if token.address in tokens:
            raise TokenListError(path, f"token #{index}: address {token.address} listed twice")
        tokens[token.address] = token
    return TokenList(tokens)


def load_token_list(path: Path) -> TokenList:
    """Read and validate a tokens file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TokenListError(path, f"cannot read: {exc.strerror or exc}") from exc
    return parse_token_list(path, text)
