"""Webhook signing secrets sealed at rest when `SIGFLOW_WEBHOOK_SECRETS_KEY` is set.

The dispatcher needs each secret itself to sign (an HMAC key cannot be hashed), so
`webhook_subscriptions` must hold it. With keys set it holds a Fernet token instead
(AES-128-CBC with HMAC-SHA256, from the `cryptography` package), and a reader of the
table without the key learns nothing. Keys are comma-separated: the first seals, any of
them opens, so a key is rotated by putting the new one first and running
`sigflow webhooks reseal-secrets`. A stored value without the `fernet:` prefix is plain
(written with no key set) and is read as it is; resealing seals it.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from sigflow.settings import Settings
from sinks.webhooks.exceptions import SecretsKeyError

PREFIX = "fernet:"


class SecretBox:
    """Seals secrets for the table and opens what the table holds."""

    def __init__(self, keys: Sequence[str]) -> None:
        fernets = []
        for number, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key))
            except ValueError:
                # Never the key itself in the message: it is a secret.
                raise SecretsKeyError(
                    f"SIGFLOW_WEBHOOK_SECRETS_KEY: key #{number} is not a Fernet key (32 "
                    "url-safe base64-encoded bytes; `sigflow webhooks generate-key` makes one)"
                ) from None
        self._fernet = MultiFernet(fernets) if fernets else None

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        keys = settings.webhook_secrets_key.get_secret_value().split(",")
        return cls([key.strip() for key in keys if key.strip()])

    @property
    def seals(self) -> bool:
        """Whether secrets are written sealed (a key is set)."""
        return self._fernet is not None

    def seal(self, secret: str) -> str:
        """What the table stores for `secret`: a token under the first key, or it as is."""
        if self._fernet is None:
            return secret
        return PREFIX + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        """The secret behind a stored value (plain values pass through)."""
        if not stored.startswith(PREFIX):
            return stored
        if self._fernet is None:
            raise SecretsKeyError(
                "webhook secrets in the warehouse are sealed, and SIGFLOW_WEBHOOK_SECRETS_KEY "
                "is not set: set it to the key they were sealed with"
            )
        try:
            return self._fernet.decrypt(stored.removeprefix(PREFIX).encode()).decode()
        except InvalidToken:
            raise SecretsKeyError(
                "a webhook secret does not open with any key of SIGFLOW_WEBHOOK_SECRETS_KEY "
                "(was the key it was sealed with removed?)"
            ) from None


def generate_key() -> str:
    """A new random Fernet key for `SIGFLOW_WEBHOOK_SECRETS_KEY`."""
    return Fernet.generate_key().decode()
