"""deploy/docker-compose.yml, the Dockerfile and Prometheus reference what the code defines.

No Docker engine runs here, so these tests check the files against the code: commands
against the typer CLI, `SIGFLOW_*` variables against `Settings`, scrape targets against
the port and paths each role serves.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.deploy_contract import (
    DEPLOY,
    REPO,
    command_errors,
    health_port_setting,
    role_of,
    secret_setting_names,
    served_paths,
    setting_names,
)

COMPOSE: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
SIGFLOW = {name: s for name, s in SERVICES.items() if s.get("image", "").startswith("sigflow:")}
LONG_RUNNING = {name: s for name, s in SIGFLOW.items() if role_of(s["command"])}
PROMETHEUS: dict[str, Any] = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())


def test_every_role_runs_from_the_one_sigflow_image() -> None:
    roles = {role_of(s["command"]) for s in SIGFLOW.values()}
    assert roles == {"ingest", "process", "sink", "dispatch", "api", None}  # None: migrate
    assert {s["build"]["dockerfile"] for s in SIGFLOW.values()} == {"Dockerfile"}
    assert (REPO / "Dockerfile").is_file()


@pytest.mark.parametrize("name", sorted(SIGFLOW))
def test_service_command_is_a_real_sigflow_command(name: str) -> None:
    assert command_errors(SIGFLOW[name]["command"]) == []


@pytest.mark.parametrize("name", sorted(SIGFLOW))
def test_service_settings_are_real_and_secrets_come_from_the_environment(name: str) -> None:
    env = SIGFLOW[name]["environment"]
    sigflow_vars = {key for key in env if key.startswith("SIGFLOW_")}
    assert sigflow_vars <= setting_names(), sigflow_vars - setting_names()
    for secret in secret_setting_names() & sigflow_vars:
        assert str(env[secret]).startswith("${"), f"{secret} must come from the host env"


def test_migrate_runs_once_before_the_roles_that_need_tables() -> None:
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    for name in ("sink", "api", "dispatch"):
        conditions = {dep: spec["condition"] for dep, spec in SIGFLOW[name]["depends_on"].items()}
        assert conditions["migrate"] == "service_completed_successfully"
        assert conditions["kafka"] == "service_healthy"


def test_infrastructure_images_are_pinned() -> None:
    for name, service in SERVICES.items():
        image = service["image"]
        assert re.search(r":[\w.${}:-]+$", image) and not image.endswith(":latest"), name
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", SERVICES["kafka"]["image"])
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert SERVICES["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")


def test_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"


# ---- Prometheus -----------------------------------------------------------------------


def scrape_targets() -> dict[str, tuple[int, str]]:
    """compose service -> (port, metrics path) as Prometheus scrapes it."""
    targets = {}
    for job in PROMETHEUS["scrape_configs"]:
        path = job.get("metrics_path", "/metrics")
        for dns in job.get("dns_sd_configs", []):
            for host in dns["names"]:
                targets[host] = (dns["port"], path)
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.split(":")
                targets[host] = (int(port), path)
    return targets


def test_prometheus_scrapes_every_long_running_role() -> None:
    assert set(LONG_RUNNING) <= set(scrape_targets())


@pytest.mark.parametrize("name", sorted(LONG_RUNNING))
def test_prometheus_scrapes_the_port_and_path_the_role_serves(name: str) -> None:
    service = LONG_RUNNING[name]
    role = role_of(service["command"])
    assert role is not None
    port, path = scrape_targets()[name]
    assert int(service["environment"][health_port_setting(role)]) == port
    assert path in served_paths(role)


def test_prometheus_scrapes_only_services_that_exist() -> None:
    assert set(scrape_targets()) <= set(SERVICES)
    assert scrape_targets()["kafka-exporter"][0] == 9308


# ---- Dockerfile -----------------------------------------------------------------------

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_dockerfile_is_multi_stage_slim_non_root_with_sigflow_entrypoint() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert len(stages) >= 2 and set(stages) == {"python:3.12-slim"}
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.MULTILINE)
    assert user and not user[-1].startswith(("root", "0"))
    assert 'ENTRYPOINT ["sigflow"]' in DOCKERFILE
    assert re.search(
        r'^HEALTHCHECK .*\n?.*CMD \["python", "-m", "sigflow.healthcheck"\]',
        DOCKERFILE,
        re.MULTILINE,
    )


def test_dockerfile_copies_every_package_of_the_wheel() -> None:
    import tomllib

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", DOCKERFILE, re.MULTILINE))
    assert copied == packages
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not packages & {entry.strip("/") for entry in ignored}


def test_image_defaults_are_real_settings_and_match_compose_ports() -> None:
    image_env = dict(re.findall(r"(SIGFLOW_\w+)=(\S+)", DOCKERFILE))
    assert set(image_env) <= setting_names()
    assert (
        image_env["SIGFLOW_METRICS_PORT"] == SIGFLOW["sink"]["environment"]["SIGFLOW_METRICS_PORT"]
    )
    assert image_env["SIGFLOW_API_PORT"] == SIGFLOW["api"]["environment"]["SIGFLOW_API_PORT"]
    exposed = set(re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.MULTILINE)[0].split())
    assert exposed == {image_env["SIGFLOW_METRICS_PORT"], image_env["SIGFLOW_API_PORT"]}
