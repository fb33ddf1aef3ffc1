"""Webhook signing secrets sealed at rest with `SIGFLOW_WEBHOOK_SECRETS_KEY`."""

from __future__ import annotations

import pytest

from sigflow.settings import Settings
from sinks.webhooks.exceptions import SecretsKeyError
from sinks.webhooks.secret_box import SecretBox, generate_key

SECRET = "whsec_zUKv70jUKiwW5x3YDwErO5J691XZXA8VyuduNBCCpTc="


def test_without_a_key_secrets_are_stored_and_read_as_they_are() -> None:
    box = SecretBox([])
    assert not box.seals
    assert box.seal(SECRET) == SECRET and box.open(SECRET) == SECRET


def test_a_sealed_secret_hides_it_and_opens_to_it() -> None:
    box = SecretBox([generate_key()])
    sealed = box.seal(SECRET)
    assert sealed.startswith("fernet:") and SECRET not in sealed
    assert box.open(sealed) == SECRET
    assert box.seal(SECRET) != sealed, "each seal has its own IV"


def test_rotation_seals_with_the_first_key_and_opens_with_any() -> None:
    old, new = generate_key(), generate_key()
    sealed_before = SecretBox([old]).seal(SECRET)
    rotating = SecretBox([new, old])
    assert rotating.open(sealed_before) == SECRET
    assert SecretBox([new]).open(rotating.seal(SECRET)) == SECRET
    with pytest.raises(SecretsKeyError, match="does not open with any key"):
        SecretBox([new]).open(sealed_before)


def test_a_sealed_secret_without_a_key_says_what_to_set() -> None:
    sealed = SecretBox([generate_key()]).seal(SECRET)
    with pytest.raises(SecretsKeyError, match="SIGFLOW_WEBHOOK_SECRETS_KEY is not set"):
        SecretBox([]).open(sealed)


def test_a_malformed_key_is_refused_without_showing_it() -> None:
    settings = Settings(webhook_secrets_key=f"{generate_key()}, not-a-fernet-key ")
    with pytest.raises(SecretsKeyError, match="key #2 is not a Fernet key") as refused:
        SecretBox.from_settings(settings)
    assert "not-a-fernet-key" not in str(refused.value)
    assert "not-a-fernet-key" not in repr(settings)
