"""Opaque cursors for keyset pagination of list endpoints.

A cursor is the sort key of the last item of a page, as URL-safe base64 of JSON, so the
next page starts strictly after it (stable under inserts, unlike an offset). A full page
carries the next cursor in the `X-Next-Cursor` response header; a short page is the end.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Any

import orjson
from fastapi import Query, Response

from api.errors import ApiError

NEXT_CURSOR_HEADER = "X-Next-Cursor"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what an Int64 query parameter can hold
CursorParam = Annotated[
    str | None,
    Query(
        max_length=1_000,
        description=f"Continue after the page whose `{NEXT_CURSOR_HEADER}` header this is.",
    ),
]
CURSOR_HEADERS = {
    NEXT_CURSOR_HEADER: {
        "description": "Cursor of the next page (only when this page is full).",
        "schema": {"type": "string"},
    }
}


def encode_cursor(key: Sequence[str | int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str, types: Sequence[type]) -> list[Any]:
    """The sort key inside `cursor`, checked against `types`; 422 when it is not ours."""
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if (
        not isinstance(key, list)
        or len(key) != len(types)
        or not all(type(value) is kind for value, kind in zip(key, types, strict=True))
        or not all(INT64_MIN <= value <= INT64_MAX for value in key if type(value) is int)
    ):
        raise ApiError(422, "invalid_cursor", "cursor: not a cursor this endpoint returned")
    return key


def set_next_cursor(response: Response, page_size: int, limit: int, last: Sequence[Any]) -> None:
    """Announce the next page when this one is full."""
    if page_size == limit and page_size > 0:
        response.headers[NEXT_CURSOR_HEADER] = encode_cursor(last)
