"""The envelope as JSON Schema, for producers in other languages. schemas/envelope.schema.json
is this function's output, shipped in the repo (a test keeps the two equal)."""

from __future__ import annotations

from typing import Any

from schemas.envelope import Envelope
from schemas.payloads import PAYLOAD_MODELS


def envelope_json_schema() -> dict[str, Any]:
    schema = Envelope.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://github.com/ticketrelay/ticketrelay/schemas/envelope.schema.json"
    defs = schema.setdefault("$defs", {})
    branches = []
    for provider, model in PAYLOAD_MODELS.items():
        sub = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        defs[model.__name__] = sub
        branches.append(
            {
                "if": {"properties": {"provider": {"const": provider}}, "required": ["provider"]},
                "then": {"properties": {"payload": {"$ref": f"#/$defs/{model.__name__}"}}},
            }
        )
    schema["allOf"] = branches
    return schema
