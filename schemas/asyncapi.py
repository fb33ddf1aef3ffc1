"""AsyncAPI 3.0 document of every sigflow topic, generated from the topic registry.

Pure: no I/O. Each registry topic becomes a channel (address = prefix + name) with one
message whose payload is the value model's JSON Schema and whose Kafka key is described
in the Kafka message binding; sigflow publishes on every channel (`send` operations),
so a subscriber sees every topic, key and payload it can read.
"""

from __future__ import annotations

import re
from typing import Any

from schemas.topics import TOPICS, TopicSpec

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
SCHEMA_REF = "#/components/schemas/{model}"


def channel_id(spec: TopicSpec) -> str:
    """Channel id of a topic: its name in camelCase (`onchain.blocks` -> `onchainBlocks`)."""
    head, *rest = re.split(r"[._]", spec.name)
    return head + "".join(part.capitalize() for part in rest)


def message_id(spec: TopicSpec) -> str:
    """Message id of a topic: its value model's name (`Trade`, `Candle`, ...)."""
    return spec.value_model.__name__


def asyncapi_document(
    prefix: str = "sigflow.", bootstrap: str = "localhost:9092", version: str = "0.1.0"
) -> dict[str, Any]:
    """The AsyncAPI 3.0 document for topics named with `prefix` on broker `bootstrap`."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for spec in TOPICS.values():
        channel, message = channel_id(spec), message_id(spec)
        payload = spec.value_model.model_json_schema(ref_template=SCHEMA_REF)
        schemas.update(payload.pop("$defs", {}))
        schemas[message] = payload
        messages[message] = {
            "name": message,
            "title": message,
            "summary": spec.description,
            "contentType": "application/json",
            "payload": {"$ref": SCHEMA_REF.format(model=message)},
            "bindings": {
                "kafka": {
                    "key": {"type": "string", "description": f"Record key: {spec.key}."},
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        channels[channel] = {
            "address": f"{prefix}{spec.name}",
            "description": spec.description,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
            "bindings": {
                "kafka": {
                    "topic": f"{prefix}{spec.name}",
                    **({"partitions": spec.partitions} if spec.partitions else {}),
                    "topicConfiguration": {
                        "retention.ms": spec.retention_ms,
                        "cleanup.policy": [spec.config()["cleanup.policy"]],
                    },
                    "bindingVersion": KAFKA_BINDING_VERSION,
                }
            },
        }
        operations[f"publish{channel[0].upper()}{channel[1:]}"] = {
            "action": "send",
            "summary": f"sigflow publishes {prefix}{spec.name}; any Kafka client may read it.",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "sigflow topics",
            "version": version,
            "description": "Every Kafka topic sigflow publishes: one JSON object per record, "
            "keyed as described on each message. Timestamps are epoch milliseconds (UTC).",
            "license": {"name": "Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": bootstrap.split(",")[0].strip(),
                "protocol": "kafka",
                "description": "The Kafka cluster sigflow runs on (SIGFLOW_KAFKA_BOOTSTRAP).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }
