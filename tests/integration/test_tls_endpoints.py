"""TLS on the HTTP edges: the API serves HTTPS from settings, and the warehouse client
speaks TLS (CA, client certificate) to an https ClickHouse endpoint.

The ClickHouse side is the embedded engine's own HTTP endpoint served over mutual TLS by
uvicorn, so the client's TLS options meet a real handshake.
"""

from __future__ import annotations

import ssl
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from sigflow.exceptions import StackError
from sigflow.settings import Settings, settings_env
from sigflow.stack.process import BackgroundProcess, free_port
from sinks.warehouse import connect
from tests.tls import KEY_PASSWORD, TLSFiles, make_tls_files

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"

# The embedded warehouse app behind uvicorn with mutual TLS (client certificates required).
SERVE_WAREHOUSE_OVER_TLS = textwrap.dedent(
    """
    import ssl, sys
    from pathlib import Path
    import uvicorn
    from sigflow.stack.warehouse import create_app
    path, port, cert, key, ca = sys.argv[1:]
    uvicorn.run(
        create_app(Path(path)), host="127.0.0.1", port=int(port), log_level="warning",
        ssl_certfile=cert, ssl_keyfile=key, ssl_ca_certs=ca, ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    """
)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_warehouse(tmp_path_factory: pytest.TempPathFactory, tls: TLSFiles) -> Iterator[str]:
    """https URL of the embedded warehouse, served with mutual TLS."""
    run_dir = tmp_path_factory.mktemp("tls-warehouse")
    port = free_port()
    argv = [sys.executable, "-c", SERVE_WAREHOUSE_OVER_TLS, str(run_dir / "data"), str(port)]
    argv += [str(tls.server_cert), str(tls.server_key), str(tls.ca)]
    process = BackgroundProcess("warehouse-tls", run_dir, argv)
    process.start()
    try:
        process.wait_for_port(HOST, port, 60)
    except StackError as exc:
        process.stop(timeout=10)
        pytest.fail(f"the TLS warehouse endpoint did not start: {exc}", pytrace=False)
    yield f"https://{HOST}:{port}"
    process.stop(timeout=20)


async def test_warehouse_client_speaks_mutual_tls(tls: TLSFiles, tls_warehouse: str) -> None:
    settings = Settings(
        clickhouse_url=tls_warehouse,
        clickhouse_ca_file=tls.ca,
        clickhouse_client_cert=tls.client_cert,
        clickhouse_client_cert_key=tls.client_key,
    )
    client = await connect(settings, database="")
    try:
        result = await client.query("SELECT 40 + 2")
    finally:
        await client.close()
    assert result.result_rows == [(42,)]


async def test_warehouse_with_an_untrusted_ca_is_a_clear_error(
    tls: TLSFiles, tls_warehouse: str
) -> None:
    settings = Settings(
        clickhouse_url=tls_warehouse,
        clickhouse_ca_file=tls.untrusted_ca,
        clickhouse_client_cert=tls.client_cert,
        clickhouse_client_cert_key=tls.client_key,
    )
    with pytest.raises(StackError) as failure:
        await connect(settings, database="")
    message = str(failure.value)
    assert message.startswith(f"cannot reach ClickHouse at {tls_warehouse} (")
    assert "certificate verify failed" in message
    assert message.endswith("do SIGFLOW_CLICKHOUSE_CA_FILE/CLIENT_CERT/VERIFY fit its TLS?")


async def test_warehouse_refuses_a_client_without_certificate(
    tls: TLSFiles, tls_warehouse: str
) -> None:
    settings = Settings(clickhouse_url=tls_warehouse, clickhouse_ca_file=tls.ca)
    with pytest.raises(StackError, match=f"cannot reach ClickHouse at {tls_warehouse}"):
        await connect(settings, database="")


def test_api_serves_https_from_settings(
    tls: TLSFiles, tmp_path: Path, clickhouse_url: str, kafka_bootstrap: str
) -> None:
    port = free_port()
    settings = Settings(
        api_port=port,
        kafka_bootstrap=kafka_bootstrap,  # the API feeds its live view from the topics
        clickhouse_url=clickhouse_url,
        api_ssl_certfile=tls.server_cert,
        api_ssl_keyfile=tls.server_key_encrypted,
        api_ssl_keyfile_password=SecretStr(KEY_PASSWORD),
        log_json=False,
    )
    api = BackgroundProcess(
        "api", tmp_path, [sys.executable, "-m", "sigflow", "api"], env=settings_env(settings)
    )
    api.start()
    try:
        api.wait_for_port(HOST, port, 60)
        trusting = ssl.create_default_context(cafile=str(tls.ca))
        response = httpx.get(f"https://{HOST}:{port}/healthz", verify=trusting, timeout=10)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://{HOST}:{port}/healthz", timeout=10)  # system CAs only
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{HOST}:{port}/healthz", timeout=10)  # no plain HTTP
    finally:
        api.stop(timeout=20)
