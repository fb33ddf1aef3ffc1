"""Kafka connection security in one place: the TLS context and SASL options of every client.

Every Kafka client sigflow creates connects with the options of `kafka_client_options`:

    AIOKafkaConsumer(topic, **kafka_client_options(settings), group_id=...)
    AIOKafkaAdminClient(**kafka_client_options(settings))
    create_producer(settings)  # sigflow.kafka: already includes them

Faust takes the same options as `broker_credentials` (`processors.app.faust_credentials`).
When a client cannot start, `check_kafka_connection` opens one connection per bootstrap
server and says why, as one line: unreachable, TLS refused, or login refused.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context

from sigflow.exceptions import ConfigError, KafkaAuthError, KafkaConnectError, KafkaTLSError
from sigflow.settings import Settings

__all__ = [
    "check_kafka_connection",
    "kafka_client_options",
    "kafka_security_options",
    "kafka_ssl_context",
]


class _RedactSaslRequests(logging.Filter):
    """aiokafka logs every request at DEBUG, SASL PLAIN's `user\\0user\\0password` bytes
    included: show those requests without their payload."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            type(arg).__name__.startswith("SaslAuthenticateRequest") for arg in record.args
        ):
            record.args = tuple(
                f"{type(arg).__name__}(<redacted>)"
                if type(arg).__name__.startswith("SaslAuthenticateRequest")
                else arg
                for arg in record.args
            )
        return True


# A logger filter applies to every record of that logger, whatever handlers are configured.
logging.getLogger("aiokafka.conn").addFilter(_RedactSaslRequests())

_AUTH_ERRORS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    IllegalSaslStateError,
)


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of the SSL and SASL_SSL protocols; None for the plaintext ones."""
    if settings.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        context = create_ssl_context(
            cafile=settings.kafka_ssl_cafile,
            certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile,
            password=settings.kafka_ssl_key_password.get_secret_value() or None,
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            "invalid settings: SIGFLOW_KAFKA_SSL_CAFILE/CERTFILE/KEYFILE cannot be loaded "
            f"({exc.__class__.__name__}: {exc})"
        ) from None
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_security_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's security keyword arguments (protocol, TLS context, SASL login)."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def kafka_client_options(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and security options for any aiokafka client (producer, consumer,
    admin): the one way sigflow connects to Kafka."""
    return {"bootstrap_servers": settings.kafka_bootstrap, **kafka_security_options(settings)}


async def check_kafka_connection(settings: Settings, timeout: float = 10.0) -> None:
    """Connect (TLS and SASL included) to each bootstrap server until one accepts.

    Raises `KafkaAuthError`, `KafkaTLSError` or `KafkaConnectError` with the reason of the
    most telling failure (a refused login or handshake says more than a refused socket).
    """
    options = kafka_security_options(settings)
    failures: list[KafkaConnectError] = []
    for address in settings.kafka_bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            connection = await asyncio.wait_for(
                create_conn(host, int(port), request_timeout_ms=int(timeout * 1000), **options),
                timeout,
            )
        except (KafkaError, OSError, TimeoutError) as exc:
            failures.append(_explain(settings, exc))
            continue
        connection.close()
        return
    telling = [error for error in failures if isinstance(error, KafkaAuthError | KafkaTLSError)]
    raise (telling or failures)[0]


def _explain(settings: Settings, exc: BaseException) -> KafkaConnectError:
    """One line a person can act on, for one failed connection attempt."""
    where = f"Kafka at {settings.kafka_bootstrap} ({settings.kafka_security_protocol})"
    if isinstance(exc, _AUTH_ERRORS):
        return KafkaAuthError(
            f"{where} refused the {settings.kafka_sasl_mechanism} login of user "
            f"{settings.kafka_sasl_username!r}: {_reason(exc)} "
            "(check SIGFLOW_KAFKA_SASL_USERNAME/PASSWORD/MECHANISM)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return KafkaTLSError(
            f"TLS handshake with {where} failed: certificate verify failed: {exc.verify_message} "
            "(is SIGFLOW_KAFKA_SSL_CAFILE the CA that signed the broker certificate?)"
        )
    if isinstance(exc, ssl.SSLError):
        return KafkaTLSError(
            f"TLS handshake with {where} failed: {exc.reason or exc} "
            "(does that listener speak TLS, and does it want a client certificate?)"
        )
    if isinstance(exc, TimeoutError):
        return KafkaConnectError(f"{where} did not answer in time (is it running?)")
    return KafkaConnectError(
        f"cannot reach {where}: {_reason(exc)} (is it running? locally: `sigflow stack up`)"
    )


def _reason(exc: BaseException) -> str:
    # aiokafka's str() prefixes "[Error 58] SaslAuthenticationFailed: "; the broker's own
    # message is its first argument.
    text = str(exc.args[0]) if isinstance(exc, KafkaError) and exc.args else str(exc)
    return (text or exc.__class__.__name__).splitlines()[0]
