"""The shipped JSON Schema is the one the models generate, and it judges like the models."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.jsonschema import envelope_json_schema

SHIPPED = Path(__file__).resolve().parents[2] / "schemas" / "envelope.schema.json"


def test_shipped_schema_is_up_to_date() -> None:
    assert json.loads(SHIPPED.read_text()) == json.loads(json.dumps(envelope_json_schema())), (
        "regenerate with: ./ticketrelay schema > schemas/envelope.schema.json"
    )


def test_schema_names_every_provider_payload() -> None:
    schema = json.loads(SHIPPED.read_text())
    providers = [b["if"]["properties"]["provider"]["const"] for b in schema["allOf"]]
    assert providers == ["remypass", "fourvenues", "fourvenues_channels", "eguma"]
    assert set(schema["required"]) == {"message_id", "provider", "payload"}
    assert "bookingId" in schema["$defs"]["RemyPassBooking"]["required"]
