"""What the deploy files may reference, read from the code itself, for the deploy tests.

The compose file, the Kubernetes manifests, the Prometheus config and the Grafana
dashboards name CLI commands, settings, ports, paths, metrics and tables; these helpers
say which of those the code really defines, and render a Kustomize directory in plain
Python (resources, generators, namespace, images, strategic-merge patches: the subset
our kustomizations use; anything else is refused, never ignored).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import typer.main
import yaml
from pydantic import SecretStr

from sigflow.cli import app
from sigflow.health_server import PATHS
from sigflow.settings import Settings

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"

# Provided by branches merged separately (issue 7 is built in parallel). Each entry names
# where it comes from; `test_pending_references_are_still_pending` fails as soon as the
# code defines one, so the entry is removed at merge time and the real check applies.
PENDING_COMMANDS: dict[tuple[str, ...], str] = {}
PENDING_METRICS: dict[str, str] = {}
PENDING_TABLES: dict[str, str] = {}

# Metrics scraped from exporters the stack runs, not from sigflow code.
EXPORTER_METRICS = {"up": "Prometheus itself", "kafka_consumergroup_lag": "kafka-exporter"}

ROOT: Any = typer.main.get_command(app)  # typer's own click group


def resolve_command(args: list[str]) -> tuple[tuple[str, ...], Any]:
    """The command path `args` names and its click command (None if it does not exist)."""
    command: Any = ROOT
    path: list[str] = []
    for arg in args:
        if not hasattr(command, "commands") or arg.startswith("-"):
            break
        path.append(arg)
        command = command.commands.get(arg)
        if command is None:
            return tuple(path), None
    return tuple(path), None if hasattr(command, "commands") else command


def command_errors(args: list[str]) -> list[str]:
    """Why `args` is not a runnable `sigflow` command line (empty: it is, or is pending)."""
    path, command = resolve_command(args)
    if command is None:
        return [] if path in PENDING_COMMANDS else [f"no CLI command `sigflow {' '.join(path)}`"]
    options = {opt for param in command.params for opt in param.opts}
    return [
        f"`sigflow {' '.join(path)}` has no option {arg}"
        for arg in args[len(path) :]
        if arg.startswith("--") and arg.split("=")[0] not in options
    ]


def role_of(args: list[str]) -> str | None:
    """The health role a command line runs (None: a one-shot command without a server)."""
    path, _ = resolve_command(args)
    return {"process": "process", "sink": "sink", "api": "api", "ingest": "ingest"}.get(
        path[0], "dispatch" if path == ("dispatch",) else None
    )


def served_paths(role: str) -> set[str]:
    """HTTP paths a role serves on its health/metrics port."""
    if role != "api":
        return set(PATHS)
    from api.app import create_app

    api = create_app(Settings())
    served = set(api.openapi()["paths"])
    for route in api.routes:
        if route.__class__.__name__ == "Mount":  # /metrics: prometheus_client's ASGI app
            served.add(getattr(route, "path", "") + "/")
    return served


def health_port_setting(role: str) -> str:
    """The setting holding the port a role serves health and metrics on."""
    return "SIGFLOW_API_PORT" if role == "api" else "SIGFLOW_METRICS_PORT"


def setting_names() -> set[str]:
    return {f"SIGFLOW_{name.upper()}" for name in Settings.model_fields}


def secret_setting_names() -> set[str]:
    return {
        f"SIGFLOW_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if field.annotation is SecretStr
    }


def default_setting(env_name: str) -> str:
    field = Settings.model_fields[env_name.removeprefix("SIGFLOW_").lower()]
    return str(field.get_default(call_default_factory=True))


_METRIC_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary)\(\s*[\"']([a-zA-Z_:][a-zA-Z0-9_:]*)[\"']"
)
_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
}


def metric_names_in_code() -> set[str]:
    """Every sample name the code's prometheus_client metrics can expose."""
    names = set()
    for path in REPO.glob("*/**/*.py"):
        if path.parts[len(REPO.parts)] in {".venv", "tests"}:
            continue
        for kind, name in _METRIC_DEFINITION.findall(path.read_text()):
            base = name.removesuffix("_total") if kind == "Counter" else name
            names |= {base + suffix for suffix in _SUFFIXES[kind]} | {name}
    return names


def migration_tables() -> set[str]:
    """Tables the ClickHouse migrations create."""
    tables = set()
    for sql in (REPO / "sinks" / "migrations").glob("*.sql"):
        tables |= set(re.findall(r"CREATE TABLE IF NOT EXISTS \{db\}\.(\w+)", sql.read_text()))
    return tables


# ---- Kustomize, the subset we use ----------------------------------------------------

_KUSTOMIZE_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "configMapGenerator",
    "images",
    "patches",
}


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render_kustomization(directory: Path) -> list[dict[str, Any]]:
    """The resources `kubectl kustomize directory` builds (hash suffixes left out)."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - _KUSTOMIZE_KEYS
    assert not unknown, f"{directory}: the test renderer does not know {unknown}"
    resources: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        assert path.exists(), f"{directory}/kustomization.yaml lists missing {entry}"
        resources += render_kustomization(path) if path.is_dir() else load_yaml_documents(path)
    for generator in spec.get("configMapGenerator", []):
        data = {}
        for name in generator["files"]:
            assert (directory / name).is_file(), f"configMapGenerator file {name} missing"
            data[Path(name).name] = (directory / name).read_text()
        resources.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]}}
            | {"data": data}
        )
    for patch in spec.get("patches", []):
        assert set(patch) == {"path"}, f"only file patches are supported: {patch}"
        for document in load_yaml_documents(directory / patch["path"]):
            target = find_resource(resources, document["kind"], document["metadata"]["name"])
            assert target is not None, (
                f"{directory / patch['path']} patches {document['kind']}/"
                f"{document['metadata']['name']}, which the resources do not define"
            )
            _merge(target, document)
    if "namespace" in spec:
        for resource in resources:
            if resource["kind"] != "Namespace":
                resource["metadata"]["namespace"] = spec["namespace"]
    for image in spec.get("images", []):
        for container in containers(resources):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    return resources


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Strategic merge: maps recursively, lists of named maps by `name`, else replace."""
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif _named_list(value) and _named_list(current):
            by_name = {item["name"]: item for item in current}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    current.append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _named_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def find_resource(resources: Iterable[dict[str, Any]], kind: str, name: str) -> Any:
    return next((r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name), None)


def pod_specs(resources: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment and Job."""
    return [
        (r["metadata"]["name"], r["spec"]["template"]["spec"])
        for r in resources
        if r["kind"] in {"Deployment", "Job"}
    ]


def containers(resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for _, spec in pod_specs(resources) for c in spec["containers"]]
