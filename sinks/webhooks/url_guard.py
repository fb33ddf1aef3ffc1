"""Refusing webhook URLs that point inside the network sigflow runs in (SSRF guard).

A subscriber chooses the URL, so without this guard anyone allowed to subscribe could
make the dispatcher POST to loopback services, cloud metadata (169.254.169.254) or
private hosts. Only http(s) is allowed, and every address a host name resolves to must
be public unless the settings allow it. The check runs when a subscription is created
or enabled, and again on every connection (`sinks.webhooks.transport`), because DNS
answers can change after the check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from sigflow.settings import Settings
from sinks.webhooks.exceptions import UnsafeUrlError, WebhookError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Checked in this order, so 127.0.0.1 is reported as loopback rather than "private".
_REFUSED_KINDS = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_reserved", "reserved"),
    ("is_private", "private"),
)
ALLOW_HINT = (
    "set SIGFLOW_WEBHOOK_ALLOW_PRIVATE=true or SIGFLOW_WEBHOOK_ALLOWED_NETWORKS to allow it"
)


class UnresolvableHost(WebhookError):
    """The host name has no address right now (a DNS failure, retriable at delivery)."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which destination addresses webhooks may connect to."""

    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> AddressPolicy:
        return cls(
            allow_private=settings.webhook_allow_private,
            allowed_networks=tuple(
                ipaddress.ip_network(network, strict=False)
                for network in settings.webhook_allowed_networks
            ),
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused, or None when webhooks may connect to it."""
        if self.allow_private or any(address in network for network in self.allowed_networks):
            return None
        checked = address
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            checked = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
        for attribute, kind in _REFUSED_KINDS:
            if getattr(checked, attribute):
                return f"{address} is a {kind} address"
        if not checked.is_global:
            return f"{address} is not a public address"
        return None


def parse_webhook_url(url: str) -> SplitResult:
    """The parts of an http(s) URL with a host; `UnsafeUrlError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrlError(f"webhook URLs must be http or https, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        raise UnsafeUrlError(f"bad port in webhook URL {url!r}") from exc
    if not parts.hostname:
        raise UnsafeUrlError(f"webhook URL {url!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError("webhook URLs must not carry credentials; sign with the secret")
    return parts


def default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


async def resolve_allowed(host: str, port: int, policy: AddressPolicy) -> list[str]:
    """Every address `host` resolves to, if all are allowed; else `UnsafeUrlError`."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnresolvableHost(f"cannot resolve {host!r}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for address in addresses:
        reason = policy.refusal(ipaddress.ip_address(address.split("%", 1)[0]))
        if reason is not None:
            raise UnsafeUrlError(f"{host} resolves to {address}: {reason}; {ALLOW_HINT}")
    return addresses


async def check_url(url: str, policy: AddressPolicy) -> None:
    """Refuse a URL sigflow must not call (scheme, host, resolved addresses)."""
    parts = parse_webhook_url(url)
    assert parts.hostname is not None  # checked by parse_webhook_url
    await resolve_allowed(parts.hostname, default_port(parts), policy)
