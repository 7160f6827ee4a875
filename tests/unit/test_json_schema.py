"""The shipped JSON Schemas are the ones the models generate, and they judge like the models."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.jsonschema import SHIPPED, render, result_json_schema, write_schemas
from schemas.result import ResultMessage
from schemas.statuses import FINAL_STATUSES
from schemas.table import TicketIssuance
from worker.results import encode_result, result_from_row

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_schema_is_up_to_date(name: str) -> None:
    assert (SCHEMAS / name).read_text() == render(SHIPPED[name]()), "regenerate with: ./ticketrelay schema"


def test_write_schemas_writes_every_shipped_file(tmp_path: Path) -> None:
    written = write_schemas(tmp_path)
    assert sorted(p.name for p in written) == ["envelope.schema.json", "result.schema.json"]
    for path in written:
        assert json.loads(path.read_text()) == SHIPPED[path.name]()


def test_envelope_schema_names_every_provider_payload() -> None:
    schema = json.loads((SCHEMAS / "envelope.schema.json").read_text())
    branches = [b for b in schema["allOf"] if "provider" in b["if"]["properties"]]
    providers = [b["if"]["properties"]["provider"]["const"] for b in branches]
    assert providers == ["remypass", "fourvenues", "fourvenues_channels", "eguma"]
    # 1.1: payload is required for an issue only (a cancel may leave it out).
    assert set(schema["required"]) == {"message_id", "provider"}
    (cancel,) = [b for b in schema["allOf"] if "provider" not in b["if"]["properties"]]
    assert cancel["if"]["properties"]["operation"] == {"const": "cancel"}
    assert cancel["then"]["required"] == ["cancels"] and cancel["else"]["required"] == ["payload"]
    assert "bookingId" in schema["$defs"]["RemyPassBooking"]["required"]


# --- the result schema judges like the model --------------------------------------------------
# A small validator for the keywords pydantic emits here (no JSON Schema library is a
# dependency): enough to show that the shipped file accepts what the worker sends and refuses
# what the model refuses.


def _errors(schema: dict[str, Any], value: Any, root: dict[str, Any], path: str = "$") -> list[str]:
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return _errors(root["$defs"][name], value, root, path)
    if "anyOf" in schema:
        branches = [_errors(s, value, root, path) for s in schema["anyOf"]]
        return [] if any(not b for b in branches) else [f"{path}: no anyOf branch matches"]
    types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "boolean": bool,
        "null": type(None),
    }
    kind = schema.get("type")
    if kind is not None:
        ok = isinstance(value, types[kind]) and not (kind == "integer" and isinstance(value, bool))
        if not ok:
            return [f"{path}: not {kind}"]
    errors: list[str] = []
    if "const" in schema and value != schema["const"]:
        errors.append(f"{path}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{path}: not one of {schema['enum']}")
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{path}: below {schema['minimum']}")
    if schema.get("format") == "date-time" and not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", value):
        errors.append(f"{path}: not a date-time")
    if kind == "object":
        props = schema.get("properties", {})
        errors += [f"{path}.{k}: missing" for k in schema.get("required", []) if k not in value]
        for key, item in value.items():
            if key in props:
                errors += _errors(props[key], item, root, f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{path}.{key}: not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += _errors(schema["additionalProperties"], item, root, f"{path}.{key}")
    if kind == "array":
        for i, item in enumerate(value):
            errors += _errors(schema["items"], item, root, f"{path}[{i}]")
    return errors


def _row(**changes: Any) -> TicketIssuance:
    now = datetime(2026, 12, 2, 3, 4, 5, tzinfo=UTC)
    fields: dict[str, Any] = {
        "idempotency_key": "0b0c6c55-6c1f-5d0e-9b8a-0d5b1b2a9c33",
        "message_id": "BK-1",
        "provider": "eguma",
        "account": "default",
        "generation": 0,
        "status": "issued",
        "attempts": 1,
        "provider_reference": "964a870c",
        "tickets": [{"ticket_id": "t1", "code": "4092324344988259847", "category": "adult", "seat": None}],
        "message_metadata": {"order": "A-17"},
        "created_at": now,
        "updated_at": now,
        "completed_at": now,
    }
    fields.update(changes)
    return TicketIssuance(**fields)


def _sent(row: TicketIssuance) -> dict[str, Any]:
    """A result exactly as the worker puts it on the stream."""
    decoded: dict[str, Any] = json.loads(encode_result(result_from_row(row)))
    return decoded


SENT = [
    _sent(_row()),
    _sent(_row(status="failed", tickets=[], error_type="http_400", error_message="bad", http_status=400)),
    _sent(_row(status="rejected", attempts=0, tickets=[], error_type="invalid_payload", error_message="x")),
]


@pytest.mark.parametrize("sent", SENT, ids=lambda r: r["status"])
def test_result_schema_accepts_what_the_worker_sends(sent: dict[str, Any]) -> None:
    schema = json.loads((SCHEMAS / "result.schema.json").read_text())
    assert _errors(schema, sent, schema) == []
    ResultMessage.model_validate(sent)


def test_a_result_without_the_1_1_fields_stays_valid() -> None:
    schema = json.loads((SCHEMAS / "result.schema.json").read_text())
    old = {k: v for k, v in SENT[0].items() if k not in ("revision", "operation", "cancels")}
    assert _errors(schema, old, schema) == []
    parsed = ResultMessage.model_validate(old)
    assert (parsed.revision, parsed.operation, parsed.cancels) == (1, "issue", None)
    assert {"revision", "operation", "cancels"}.isdisjoint(schema["required"])


def test_a_cancel_result_is_valid() -> None:
    schema = json.loads((SCHEMAS / "result.schema.json").read_text())
    cancel = {**SENT[0], "status": "cancelled", "operation": "cancel", "cancels": "BK-0", "revision": 2}
    assert _errors(schema, cancel, schema) == []
    ResultMessage.model_validate(cancel)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"status": "queued"}, "$.status"),
        ({"operation": "refund"}, "$.operation"),
        ({"revision": 0}, "$.revision"),
        ({"surprise": 1}, "$.surprise"),
        ({"tickets": [{"code": 7}]}, "$.tickets[0].code"),
        ({"error": {"type": "x"}}, "$.error"),
        ({"metadata": {"k": 1}}, "$.metadata.k"),
    ],
)
def test_result_schema_refuses_what_the_model_refuses(change: dict[str, Any], where: str) -> None:
    schema = json.loads((SCHEMAS / "result.schema.json").read_text())
    bad = {**SENT[0], **change}
    errors = _errors(schema, bad, schema)
    assert errors and all(e.startswith(where) for e in errors), errors
    with pytest.raises(ValueError):
        ResultMessage.model_validate(bad)


def test_result_schema_names_every_final_status_and_cancelled() -> None:
    schema = result_json_schema()
    assert set(schema["properties"]["status"]["enum"]) == {*FINAL_STATUSES, "cancelled"}
    assert set(schema["properties"]) == set(ResultMessage.model_fields)
