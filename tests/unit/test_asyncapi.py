"""The AsyncAPI document matches the topic registry exactly and is valid AsyncAPI 3.0.

Validated against the official AsyncAPI 3.0.0 JSON Schema, vendored from the npm
package `@asyncapi/specs` 6.11.1 (`schemas/3.0.0-without-$id.json`, Apache-2.0) as
tests/data/asyncapi-3.0.0.schema.json.gz.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from schemas.asyncapi import asyncapi_document, channel_id, message_id
from schemas.topics import TOPICS

SCHEMA = Path(__file__).parent.parent / "data" / "asyncapi-3.0.0.schema.json.gz"


@cache
def validator() -> jsonschema.Draft7Validator:
    with gzip.open(SCHEMA) as file:
        return jsonschema.Draft7Validator(json.load(file))


def errors(document: dict[str, Any]) -> list[str]:
    return [error.message for error in validator().iter_errors(document)]


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_document_is_valid_asyncapi_3() -> None:
    document = asyncapi_document("acme.", "kafka-0:9092,kafka-1:9092")
    assert document["asyncapi"] == "3.0.0"
    assert errors(document) == []


@pytest.mark.parametrize(
    "break_it",
    [
        lambda d: d["operations"]["publishTrades"].update(action="publish"),  # 2.x verb
        lambda d: d["channels"]["trades"]["bindings"]["kafka"].update(partitions="three"),
        lambda d: d["components"]["messages"]["Trade"]["bindings"]["kafka"].update(key=5),
        lambda d: d.pop("info"),
    ],
    ids=["v2-action", "partitions", "key-binding", "no-info"],
)
def test_the_validator_rejects_a_broken_document(break_it: Any) -> None:
    document = copy.deepcopy(asyncapi_document())
    break_it(document)
    assert errors(document)


def test_channels_are_exactly_the_registry_topics_with_the_prefix() -> None:
    document = asyncapi_document("acme.")
    assert {c["address"] for c in document["channels"].values()} == {
        f"acme.{name}" for name in TOPICS
    }
    assert len(document["channels"]) == len(TOPICS)
    assert len(document["operations"]) == len(TOPICS)


@pytest.mark.parametrize("name", sorted(TOPICS))
def test_each_topic_has_its_key_description_and_payload_schema(name: str) -> None:
    spec = TOPICS[name]
    document = asyncapi_document("sigflow.")
    channel = document["channels"][channel_id(spec)]
    assert channel["description"] == spec.description
    kafka = channel["bindings"]["kafka"]
    assert kafka["topic"] == f"sigflow.{name}"
    assert kafka["topicConfiguration"]["retention.ms"] == spec.retention_ms
    (reference,) = channel["messages"].values()
    message = resolve(document, reference["$ref"])
    assert message["name"] == message_id(spec)
    assert spec.key in message["bindings"]["kafka"]["key"]["description"]
    payload = resolve(document, message["payload"]["$ref"])
    expected = spec.value_model.model_json_schema(ref_template="#/components/schemas/{model}")
    expected.pop("$defs", None)
    assert payload == expected
    operations = [
        op
        for op in document["operations"].values()
        if op["channel"]["$ref"].endswith(f"/{channel_id(spec)}")
    ]
    assert [op["action"] for op in operations] == ["send"]
    for ref in operations[0]["messages"]:
        assert resolve(document, ref["$ref"]) == reference


def test_every_reference_in_the_document_resolves() -> None:
    document = asyncapi_document()
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for ref in refs:
        resolve(document, ref)  # KeyError names a dangling reference


def test_cli_prints_the_document_and_writes_it_to_a_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGFLOW_")}
    env |= {"SIGFLOW_TOPIC_PREFIX": "acme.", "SIGFLOW_DATA_DIR": str(tmp_path / "data")}
    printed = subprocess.run(
        [sys.executable, "-m", "sigflow", "schemas", "asyncapi"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    target = tmp_path / "asyncapi.json"
    written = subprocess.run(
        [sys.executable, "-m", "sigflow", "schemas", "asyncapi", "--output", str(target)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert written.returncode == 0, written.stderr
    from_stdout = json.loads(printed.stdout)
    assert from_stdout == json.loads(target.read_text())
    assert errors(from_stdout) == []
    assert from_stdout["channels"]["trades"]["address"] == "acme.trades"
