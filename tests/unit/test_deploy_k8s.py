"""deploy/k8s: rendered base and production overlay are valid Kubernetes and reference
only what the code defines.

Schemas: the `kubernetes-validate` PyPI package bundles the Kubernetes OpenAPI JSON
schemas per release (offline); manifests are checked strictly (unknown fields fail)
against Kubernetes 1.33. Kustomize is rendered by tests/deploy_contract.py in Python.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.deploy_contract import (
    K8S,
    command_errors,
    containers,
    find_resource,
    health_port_setting,
    load_yaml_documents,
    pod_specs,
    render_kustomization,
    role_of,
    secret_setting_names,
    served_paths,
    setting_names,
)

KUBERNETES_VERSION = "1.33"
TREES = {"base": K8S / "base", "production": K8S / "overlays" / "production"}
RENDERED = {name: render_kustomization(path) for name, path in TREES.items()}
OPTIONAL = sorted((K8S / "optional").glob("*.yaml"))


def resource_id(resource: dict[str, Any]) -> str:
    return f"{resource['kind']}/{resource['metadata']['name']}"


def config(resources: list[dict[str, Any]]) -> dict[str, str]:
    return dict(find_resource(resources, "ConfigMap", "sigflow-config")["data"])


def env_of(container: dict[str, Any], resources: list[dict[str, Any]]) -> dict[str, Any]:
    """Variables of a container: its ConfigMap refs, then its own `env` entries."""
    env: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        env |= find_resource(resources, "ConfigMap", name)["data"]
    env |= {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}
    return env


def all_resources() -> list[tuple[str, dict[str, Any]]]:
    rendered = [(f"{tree}:{resource_id(r)}", r) for tree, rs in RENDERED.items() for r in rs]
    optional = [(f"{p.name}:{resource_id(r)}", r) for p in OPTIONAL for r in load_yaml_documents(p)]
    return rendered + optional


@pytest.mark.parametrize(
    ("label", "resource"), all_resources(), ids=[i for i, _ in all_resources()]
)
def test_manifest_is_valid_kubernetes(label: str, resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_the_schema_validator_rejects_a_broken_manifest() -> None:
    deployment = find_resource(RENDERED["base"], "Deployment", "sigflow-sink")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_role_has_a_deployment_and_migrations_a_job(tree: str) -> None:
    resources = RENDERED[tree]
    roles = {
        role_of(c["args"])
        for r in resources
        if r["kind"] == "Deployment"
        for c in r["spec"]["template"]["spec"]["containers"]
    }
    assert roles == {"ingest", "process", "sink", "dispatch", "api"}
    job = find_resource(resources, "Job", "sigflow-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_container_commands_are_real_sigflow_commands(tree: str) -> None:
    for container in containers(RENDERED[tree]):
        assert command_errors(container["args"]) == [], container["name"]
        assert "command" not in container  # the image's ENTRYPOINT is `sigflow`


@pytest.mark.parametrize("tree", sorted(TREES))
def test_settings_are_real_and_secrets_come_only_from_the_secret(tree: str) -> None:
    resources = RENDERED[tree]
    assert set(config(resources)) <= setting_names()
    assert not secret_setting_names() & set(config(resources))
    for container in containers(resources):
        own = {item["name"]: item for item in container["env"]}
        assert {n for n in own if n.startswith("SIGFLOW_")} <= setting_names()
        for name, item in own.items():
            if name in secret_setting_names() or "secretKeyRef" in item.get("valueFrom", {}):
                assert "value" not in item
                assert item["valueFrom"]["secretKeyRef"]["name"] == "sigflow-secrets"
    assert not [r for r in resources if r["kind"] == "Secret"], "secrets are created outside git"


@pytest.mark.parametrize("tree", sorted(TREES))
def test_probes_hit_the_port_and_paths_each_role_serves(tree: str) -> None:
    resources = RENDERED[tree]
    for name, spec in pod_specs(resources):
        for container in spec["containers"]:
            role = role_of(container["args"])
            if role is None:
                assert "livenessProbe" not in container  # the one-shot migration
                continue
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            expected_port = int(env_of(container, resources)[health_port_setting(role)])
            probes = {k: container[k]["httpGet"] for k in ("livenessProbe", "readinessProbe")}
            assert probes["livenessProbe"]["path"] == "/healthz", name
            assert probes["readinessProbe"]["path"] == "/readyz", name
            for probe in [*probes.values(), container["startupProbe"]["httpGet"]]:
                assert ports[probe["port"]] == expected_port, name
                assert probe["path"] in served_paths(role), name
            deployment = find_resource(resources, "Deployment", name)
            annotations = deployment["spec"]["template"]["metadata"]["annotations"]
            assert int(annotations["prometheus.io/port"]) == expected_port
            assert annotations["prometheus.io/path"] in served_paths(role)


@pytest.mark.parametrize("tree", sorted(TREES))
def test_startup_probe_outlasts_the_startup_wait(tree: str) -> None:
    timeout = float(config(RENDERED[tree])["SIGFLOW_STARTUP_TIMEOUT_SECONDS"])
    for container in containers(RENDERED[tree]):
        if "startupProbe" in container:
            probe = container["startupProbe"]
            assert probe["periodSeconds"] * probe["failureThreshold"] > timeout


@pytest.mark.parametrize("tree", sorted(TREES))
def test_consumers_never_outnumber_partitions(tree: str) -> None:
    resources = RENDERED[tree]
    partitions = int(config(resources)["SIGFLOW_TOPIC_PARTITIONS"])
    hpas = [r for r in resources if r["kind"] == "HorizontalPodAutoscaler"]
    assert [h["metadata"]["name"] for h in hpas] == ["sigflow-process"]
    for hpa in hpas:
        target = find_resource(resources, "Deployment", hpa["spec"]["scaleTargetRef"]["name"])
        assert target is not None
        assert hpa["spec"]["minReplicas"] <= target["spec"]["replicas"]
        assert hpa["spec"]["maxReplicas"] <= partitions
        assert {m["resource"]["name"] for m in hpa["spec"]["metrics"]} == {"cpu"}
    for name in ("sigflow-process", "sigflow-sink"):
        assert find_resource(resources, "Deployment", name)["spec"]["replicas"] <= partitions


def test_optional_lag_autoscaler_targets_the_processor_group_within_partitions() -> None:
    (hpa,) = load_yaml_documents(K8S / "optional" / "hpa-consumer-lag.yaml")
    base = RENDERED["base"]
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    assert metric["name"] == "kafka_consumergroup_lag"
    assert (
        metric["selector"]["matchLabels"]["consumergroup"]
        == config(base)["SIGFLOW_PROCESSOR_APP_ID"]
    )
    assert hpa["spec"]["maxReplicas"] <= int(config(base)["SIGFLOW_TOPIC_PARTITIONS"])


@pytest.mark.parametrize("tree", sorted(TREES))
def test_services_and_budgets_select_existing_pods(tree: str) -> None:
    resources = RENDERED[tree]
    pods = {
        r["metadata"]["name"]: (r["spec"]["template"]["metadata"]["labels"], r)
        for r in resources
        if r["kind"] == "Deployment"
    }
    for resource in resources:
        if resource["kind"] == "Service":
            selector = resource["spec"]["selector"]
        elif resource["kind"] == "PodDisruptionBudget":
            selector = resource["spec"]["selector"]["matchLabels"]
        else:
            continue
        matched = [d for labels, d in pods.values() if selector.items() <= labels.items()]
        assert len(matched) == 1, resource_id(resource)
        if resource["kind"] == "Service":
            port_names = {
                p["name"]
                for c in matched[0]["spec"]["template"]["spec"]["containers"]
                for p in c["ports"]
            }
            for port in resource["spec"]["ports"]:
                assert port["targetPort"] in port_names
        else:
            assert resource["spec"]["minAvailable"] < matched[0]["spec"]["replicas"]


@pytest.mark.parametrize("tree", sorted(TREES))
def test_every_container_has_resources_and_runs_locked_down(tree: str) -> None:
    for name, spec in pod_specs(RENDERED[tree]):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for container in spec["containers"]:
            assert set(container["resources"]) == {"requests", "limits"}, name
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name


def test_production_overlay_changes_only_resources_the_base_defines() -> None:
    base = {resource_id(r) for r in RENDERED["base"]}
    production = RENDERED["production"]
    assert {resource_id(r) for r in production} == base
    assert {c["image"] for c in containers(production)} == {"registry.example.com/sigflow:0.1.0"}
    assert all(
        r["metadata"].get("namespace") == "sigflow" for r in production if r["kind"] != "Namespace"
    )
    assert config(production)["SIGFLOW_TOPIC_PARTITIONS"] == "12"
    assert (
        find_resource(production, "HorizontalPodAutoscaler", "sigflow-process")["spec"][
            "maxReplicas"
        ]
        == 12
    )
