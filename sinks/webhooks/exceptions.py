"""Errors of the webhook sink.

SigflowError
└── WebhookError              (here) anything about webhooks a person must act on
    ├── UnsafeUrlError        a URL that is not http(s) or resolves to a refused address
    ├── InvalidSubscription   a subscription that cannot be created as asked
    ├── SubscriptionNotFound  no subscription with that id
    ├── InvalidSecret         a secret that is not `whsec_` + base64 of 24-64 bytes
    └── SecretsKeyError       SIGFLOW_WEBHOOK_SECRETS_KEY is malformed, missing or wrong
"""

from __future__ import annotations

from sigflow.exceptions import SigflowError


class WebhookError(SigflowError):
    """Base class of the webhook sink's errors."""


class UnsafeUrlError(WebhookError):
    """The URL must not be called: wrong scheme, or it resolves to a refused address."""


class InvalidSubscription(WebhookError):
    """A subscription's URL or filters cannot be used."""


class SubscriptionNotFound(WebhookError):
    """No subscription has the given id."""

    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"no webhook subscription with id {subscription_id!r}")
        self.subscription_id = subscription_id


class InvalidSecret(WebhookError):
    """A signing secret that does not follow the Standard Webhooks format."""


class SecretsKeyError(WebhookError):
    """Stored secrets cannot be sealed or opened with `SIGFLOW_WEBHOOK_SECRETS_KEY`."""
