"""JSON Schema export: one file per topic, the document a subscriber codes against."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schemas.topics import TOPICS, TopicSpec


def topic_json_schema(spec: TopicSpec, prefix: str = "sigflow.") -> dict[str, Any]:
    """The JSON Schema of one topic's record value, annotated with topic and key.

    A batched topic's record is an array of its events: the event schema moves to
    `$defs` and the record schema refers to it.
    """
    schema = spec.value_model.model_json_schema()
    if spec.batched:
        name = spec.value_model.__name__
        definitions = {**schema.pop("$defs", {}), name: schema}
        schema = {
            "type": "array",
            "minItems": 1,
            "items": {"$ref": f"#/$defs/{name}"},
            "$defs": definitions,
        }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"sigflow:{spec.name}"
    schema["x-topic"] = f"{prefix}{spec.name}"
    schema["x-key"] = spec.key
    schema["description"] = spec.description
    return schema


def export_json_schemas(directory: Path, prefix: str = "sigflow.") -> list[Path]:
    """Write `<topic>.json` for every topic; return the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in TOPICS.values():
        path = directory / f"{spec.name}.json"
        path.write_text(json.dumps(topic_json_schema(spec, prefix), indent=2) + "\n")
        written.append(path)
    return written
