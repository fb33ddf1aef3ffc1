"""A webhook subscription: where to POST, how to sign, which alerts it wants (pure)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from schemas.events import SEVERITY_RANK, Alert, Severity
from sinks.webhooks.url_guard import default_port, parse_webhook_url


class Subscription(BaseModel):
    """One subscriber. Empty `kinds`/`symbols` mean every kind/symbol."""

    model_config = ConfigDict(frozen=True)

    subscription_id: str
    url: str
    secret: SecretStr
    previous_secret: SecretStr | None = None
    previous_secret_expires_at: datetime | None = Field(
        None, description="Until when the previous secret also signs (secret rotation)."
    )
    kinds: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    min_severity: Severity = "info"
    enabled: bool = True
    disabled_reason: str = ""
    created_at: datetime
    updated_at: datetime

    def matches(self, alert: Alert) -> bool:
        """True when this subscription wants `alert` (enabled or not)."""
        if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[self.min_severity]:
            return False
        if self.kinds and alert.kind not in self.kinds:
            return False
        return not self.symbols or alert.symbol in self.symbols

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a message sent at `now`: the current one first."""
        current = [self.secret.get_secret_value()]
        if (
            self.previous_secret is not None
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        ):
            current.append(self.previous_secret.get_secret_value())
        return current

    @property
    def endpoint(self) -> str:
        """`host:port` of the receiver: the unit of per-endpoint concurrency."""
        parts = parse_webhook_url(self.url)
        return f"{parts.hostname}:{default_port(parts)}"
