"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

Pure functions, no I/O. Secrets are `whsec_` + base64 of random bytes; during a secret
rotation a message carries one signature per valid secret, space separated, and a
receiver accepts the message if any of them verifies with a secret it knows.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Iterable

from sinks.webhooks.exceptions import InvalidSecret

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
_MIN_SECRET_BYTES, _MAX_SECRET_BYTES = 24, 64


def generate_secret() -> str:
    """A new signing secret with 256 random bits."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_` secret; `InvalidSecret` if it is malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("a webhook secret is base64 after its prefix") from exc
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"a webhook secret holds {_MIN_SECRET_BYTES}-{_MAX_SECRET_BYTES} bytes, not {len(key)}"
        )
    return key


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of a message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signature_header(
    signing_secrets: Iterable[str], message_id: str, timestamp: int, body: bytes
) -> str:
    """The `webhook-signature` value: one signature per secret, space separated."""
    signatures = [sign(secret, message_id, timestamp, body) for secret in signing_secrets]
    if not signatures:
        raise InvalidSecret("a webhook needs at least one signing secret")
    return " ".join(signatures)
