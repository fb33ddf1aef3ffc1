"""An httpx transport whose every TCP connection goes to an address the policy allows.

The host is resolved here, each address checked, and the connection made to the
checked address itself, so a DNS answer that changes between the check and the connect
(DNS rebinding) cannot reach a refused address. TLS still verifies the certificate and
sends SNI for the host name, because httpcore passes the name to `start_tls` itself.
"""

from __future__ import annotations

import typing

import httpcore
import httpx

from sinks.webhooks.url_guard import AddressPolicy, UnresolvableHost, resolve_allowed


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's default backend, with the address check in front of `connect_tcp`."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve_allowed(host, port, self.policy)
        except UnresolvableHost as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return await self._inner.connect_tcp(
            addresses[0], port, timeout, local_address, socket_options
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks never connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool on the guarded backend.

    No proxies from the environment (`trust_env=False`): a proxy would make the
    connection, and the address check would then guard the proxy instead of the target.
    """

    def __init__(self, policy: AddressPolicy, *, max_connections: int) -> None:
        super().__init__(trust_env=False)
        # httpx offers no public hook for the network backend; its pool takes one.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            network_backend=GuardedNetworkBackend(policy),
        )
