"""Throw-away certificates for the TLS tests: a CA, a server and a client certificate it
signed, and a second CA that signed nothing here (the "untrusted" one).

Made with trustme; keys are rewritten as PKCS#8 because Kafka's PEM keystores take only
that form (`BEGIN PRIVATE KEY`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

KEY_PASSWORD = "key-password-for-tests"


@dataclass(frozen=True)
class TLSFiles:
    """PEM files in one directory."""

    ca: Path  # the CA that signed the server and client certificates
    untrusted_ca: Path  # a CA that signed neither
    server_cert: Path  # server certificate chain for 127.0.0.1 and localhost
    server_key: Path
    server_key_encrypted: Path  # the server key, encrypted with KEY_PASSWORD
    server_keystore: Path  # server key + chain in one file (a Kafka PEM keystore)
    client_cert: Path
    client_key: Path
    client_key_encrypted: Path  # the client key, encrypted with KEY_PASSWORD


def _pkcs8(key_pem: bytes, password: str | None = None) -> bytes:
    key = serialization.load_pem_private_key(key_pem, None)
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def make_tls_files(directory: Path) -> TLSFiles:
    """Write a fresh CA, server and client certificates into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, untrusted = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("sigflow-client")
    files = TLSFiles(
        ca=directory / "ca.pem",
        untrusted_ca=directory / "untrusted-ca.pem",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        server_key_encrypted=directory / "server-encrypted.key",
        server_keystore=directory / "server-keystore.pem",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        client_key_encrypted=directory / "client-encrypted.key",
    )
    ca.cert_pem.write_to_path(files.ca)
    untrusted.cert_pem.write_to_path(files.untrusted_ca)
    server_chain = b"".join(blob.bytes() for blob in server.cert_chain_pems)
    server_key = _pkcs8(server.private_key_pem.bytes())
    files.server_cert.write_bytes(server_chain)
    files.server_key.write_bytes(server_key)
    files.server_key_encrypted.write_bytes(_pkcs8(server.private_key_pem.bytes(), KEY_PASSWORD))
    files.server_keystore.write_bytes(server_key + server_chain)
    files.client_cert.write_bytes(b"".join(blob.bytes() for blob in client.cert_chain_pems))
    files.client_key.write_bytes(_pkcs8(client.private_key_pem.bytes()))
    files.client_key_encrypted.write_bytes(_pkcs8(client.private_key_pem.bytes(), KEY_PASSWORD))
    return files
