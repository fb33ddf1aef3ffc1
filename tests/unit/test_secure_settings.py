"""Secure-connection settings: validation, secret files, never showing secrets, and the
client options built from them (aiokafka, Faust, clickhouse-connect)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr

from processors.app import faust_credentials
from sigflow.exceptions import ConfigError
from sigflow.kafka_security import kafka_client_options, kafka_security_options
from sigflow.settings import Settings, load_settings, settings_env
from sinks.warehouse import clickhouse_tls_options
from tests.tls import KEY_PASSWORD, TLSFiles, make_tls_files

PASSWORD = "pw-that-must-never-show"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def sasl_ssl(tls: TLSFiles, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap": "broker-1:9093,broker-2:9093",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_username": "sigflow",
        "kafka_sasl_password": SecretStr(PASSWORD),
        "kafka_ssl_cafile": tls.ca,
    }
    return Settings(**(values | overrides))


def load_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(f"SIGFLOW_{name.upper()}", value)
    with pytest.raises(ConfigError) as failure:
        load_settings()
    message = str(failure.value)
    assert "\n" not in message
    return message


def test_default_settings_connect_in_plaintext() -> None:
    assert kafka_client_options(Settings(kafka_bootstrap="k:9092")) == {
        "bootstrap_servers": "k:9092",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_options_carry_login_and_a_verifying_tls_context(tls: TLSFiles) -> None:
    options = kafka_client_options(sasl_ssl(tls, kafka_sasl_mechanism="SCRAM-SHA-256"))
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "broker-1:9093,broker-2:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "sigflow",
        "sasl_plain_password": PASSWORD,
    }
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert len(context.get_ca_certs()) == 1  # exactly the configured CA, not the system store


def test_hostname_check_can_be_turned_off(tls: TLSFiles) -> None:
    context = kafka_security_options(sasl_ssl(tls, kafka_ssl_check_hostname=False))["ssl_context"]
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified


def test_sasl_plaintext_has_no_tls_context(tls: TLSFiles) -> None:
    settings = sasl_ssl(tls, kafka_security_protocol="SASL_PLAINTEXT", kafka_ssl_cafile=None)
    options = kafka_security_options(settings)
    assert "ssl_context" not in options
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"  # the default mechanism


def test_mutual_tls_loads_an_encrypted_client_key_with_its_password(tls: TLSFiles) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls.ca,
        kafka_ssl_certfile=tls.client_cert,
        kafka_ssl_keyfile=tls.client_key_encrypted,
        kafka_ssl_key_password=SecretStr(KEY_PASSWORD),
    )
    options = kafka_security_options(settings)
    assert options["security_protocol"] == "SSL"
    assert "sasl_plain_password" not in options


def test_wrong_client_key_password_is_a_config_error(tls: TLSFiles) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_certfile=tls.client_cert,
        kafka_ssl_keyfile=tls.client_key_encrypted,
        kafka_ssl_key_password=SecretStr("not-it"),
    )
    with pytest.raises(ConfigError, match="SIGFLOW_KAFKA_SSL_CAFILE/CERTFILE/KEYFILE cannot"):
        kafka_security_options(settings)


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT", "SSL", "PLAINTEXT"])
def test_faust_credentials_give_faust_the_same_aiokafka_options(
    tls: TLSFiles, protocol: str
) -> None:
    """Faust turns `broker_credentials` into aiokafka options itself: they must match ours."""
    settings = sasl_ssl(
        tls,
        kafka_security_protocol=protocol,
        kafka_sasl_username="sigflow" if protocol.startswith("SASL_") else "",
        kafka_ssl_cafile=tls.ca if protocol.endswith("SSL") else None,
    )
    ours = kafka_security_options(settings)
    credentials = faust_credentials(settings)
    faust_options = {
        name: value
        for name, value in credentials_to_aiokafka_auth(credentials).items()
        if value is not None
    }
    assert faust_options.keys() == ours.keys()
    for name, value in ours.items():
        if name == "ssl_context":
            assert faust_options[name].get_ca_certs() == value.get_ca_certs()
        else:
            assert faust_options[name] == value
    if credentials is not None:
        assert PASSWORD not in repr(credentials)


def test_faust_credentials_types(tls: TLSFiles) -> None:
    assert isinstance(faust_credentials(sasl_ssl(tls)), SASLCredentials)
    ssl_only = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tls.ca)
    assert isinstance(faust_credentials(ssl_only), SSLCredentials)
    assert faust_credentials(Settings()) is None


def test_secrets_never_show_in_repr_str_or_json(tls: TLSFiles) -> None:
    settings = sasl_ssl(
        tls,
        clickhouse_password=SecretStr(PASSWORD + "-ch"),
        api_ssl_keyfile_password=SecretStr(PASSWORD + "-api"),
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert PASSWORD not in text
    # A child role process gets them through its environment, and only there.
    assert settings_env(settings)["SIGFLOW_KAFKA_SASL_PASSWORD"] == PASSWORD


def test_sasl_without_password_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    message = load_error(monkeypatch, kafka_security_protocol="SASL_SSL", kafka_sasl_username="u")
    assert message == (
        "invalid settings: SIGFLOW_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
        "SIGFLOW_KAFKA_SASL_USERNAME and SIGFLOW_KAFKA_SASL_PASSWORD"
    )


def test_missing_ca_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    message = load_error(monkeypatch, kafka_security_protocol="SSL", kafka_ssl_cafile=str(missing))
    assert message == f"invalid settings: SIGFLOW_KAFKA_SSL_CAFILE: no such file: {missing}"


def test_unknown_protocol_and_mechanism_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    message = load_error(monkeypatch, kafka_security_protocol="TLS", kafka_sasl_mechanism="MD5")
    assert "SIGFLOW_KAFKA_SECURITY_PROTOCOL: Input should be 'PLAINTEXT', 'SSL'" in message
    assert "SIGFLOW_KAFKA_SASL_MECHANISM: Input should be 'PLAIN'" in message


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"kafka_sasl_username": "u"}, "PLAINTEXT does not use SASL"),
        ({"kafka_ssl_cafile": "{ca}"}, "PLAINTEXT does not use TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "{key}"},
            "SIGFLOW_KAFKA_SSL_KEYFILE needs its certificate file",
        ),
        ({"api_ssl_certfile": "{cert}"}, "SIGFLOW_API_SSL_CERTFILE needs SIGFLOW_API_SSL_KEYFILE"),
        ({"clickhouse_ca_file": "{ca}"}, "need an https:// SIGFLOW_CLICKHOUSE_URL"),
    ],
)
def test_settings_that_would_be_silently_ignored_are_refused(
    monkeypatch: pytest.MonkeyPatch, tls: TLSFiles, env: dict[str, str], expected: str
) -> None:
    files = {"ca": tls.ca, "key": tls.client_key, "cert": tls.client_cert}
    message = load_error(monkeypatch, **{k: v.format(**files) for k, v in env.items()})
    assert expected in message


def test_password_from_a_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "SIGFLOW_KAFKA_SASL_PASSWORD").write_text(PASSWORD + "\n")
    monkeypatch.setenv("SIGFLOW_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("SIGFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SIGFLOW_KAFKA_SASL_USERNAME", "sigflow")
    assert load_settings().kafka_sasl_password.get_secret_value() == PASSWORD


def test_env_wins_over_a_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "SIGFLOW_CLICKHOUSE_PASSWORD").write_text("from-file")
    monkeypatch.setenv("SIGFLOW_CLICKHOUSE_PASSWORD", "from-env")
    assert Settings(secrets_dir=tmp_path).clickhouse_password.get_secret_value() == "from-env"


def test_missing_secrets_dir_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    message = load_error(monkeypatch, secrets_dir=str(tmp_path / "missing"))
    assert message.endswith(f"SIGFLOW_SECRETS_DIR: no such directory: {tmp_path / 'missing'}")


def test_clickhouse_tls_options(tls: TLSFiles) -> None:
    assert clickhouse_tls_options(Settings(clickhouse_url="http://ch:8123")) == {}
    assert clickhouse_tls_options(Settings(clickhouse_url="https://ch:8443")) == {"verify": True}
    settings = Settings(
        clickhouse_url="https://ch:8443",
        clickhouse_ca_file=tls.ca,
        clickhouse_client_cert=tls.client_cert,
        clickhouse_client_cert_key=tls.client_key,
        clickhouse_verify=False,
    )
    assert clickhouse_tls_options(settings) == {
        "verify": False,
        "ca_cert": str(tls.ca),
        "client_cert": str(tls.client_cert),
        "client_cert_key": str(tls.client_key),
    }


def test_secure_settings_round_trip_through_a_child_environment(
    monkeypatch: pytest.MonkeyPatch, tls: TLSFiles
) -> None:
    settings = sasl_ssl(
        tls,
        kafka_ssl_certfile=tls.client_cert,
        kafka_ssl_keyfile=tls.client_key_encrypted,
        kafka_ssl_key_password=SecretStr(KEY_PASSWORD),
        kafka_ssl_check_hostname=False,
        clickhouse_url="https://ch:8443",
        clickhouse_ca_file=tls.ca,
        api_ssl_certfile=tls.server_cert,
        api_ssl_keyfile=tls.server_key,
    )
    for key, value in settings_env(settings).items():
        monkeypatch.setenv(key, value)
    assert Settings() == settings
