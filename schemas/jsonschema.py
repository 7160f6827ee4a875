"""The envelope and the result message as JSON Schema, for producers and consumers in other
languages. schemas/envelope.schema.json and schemas/result.schema.json are these functions'
output, shipped in the repo (`./ticketrelay schema` writes them; a test keeps them equal)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.envelope import CancelOptions, Envelope
from schemas.payloads import PAYLOAD_MODELS
from schemas.result import ResultMessage

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_BASE = "https://github.com/ticketrelay/ticketrelay/schemas/"
SCHEMAS_DIR = Path(__file__).resolve().parent


def envelope_json_schema() -> dict[str, Any]:
    schema = Envelope.model_json_schema()
    schema["$schema"] = DRAFT
    schema["$id"] = ID_BASE + "envelope.schema.json"
    defs = schema.setdefault("$defs", {})
    branches = []
    for provider, model in PAYLOAD_MODELS.items():
        sub = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        defs[model.__name__] = sub
        branches.append(
            {
                # An issue's payload (operation absent or `issue`) is the provider's body.
                "if": {
                    "properties": {"provider": {"const": provider}, "operation": {"const": "issue"}},
                    "required": ["provider"],
                },
                "then": {"properties": {"payload": {"$ref": f"#/$defs/{model.__name__}"}}},
            }
        )
    # 1.1: a cancel names the booking in `cancels` and may carry options; an issue needs a payload.
    defs[CancelOptions.__name__] = CancelOptions.model_json_schema()
    branches.append(
        {
            "if": {"properties": {"operation": {"const": "cancel"}}, "required": ["operation"]},
            "then": {
                "required": ["cancels"],
                "properties": {"payload": {"$ref": f"#/$defs/{CancelOptions.__name__}"}},
            },
            "else": {"required": ["payload"]},
        }
    )
    schema["allOf"] = branches
    return schema


def result_json_schema() -> dict[str, Any]:
    # Serialization mode: the schema describes what a consumer reads off the stream. Fields
    # with a default (the 1.1 ones among them) stay optional, so 1.0 results validate too.
    schema = ResultMessage.model_json_schema(mode="serialization")
    schema["$schema"] = DRAFT
    schema["$id"] = ID_BASE + "result.schema.json"
    return schema


SHIPPED: dict[str, Callable[[], dict[str, Any]]] = {
    "envelope.schema.json": envelope_json_schema,
    "result.schema.json": result_json_schema,
}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMAS_DIR) -> list[Path]:
    written = []
    for name, build in SHIPPED.items():
        path = directory / name
        path.write_text(render(build()))
        written.append(path)
    return written
