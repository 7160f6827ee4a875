"""The Python producer helper. It writes exactly what any other producer writes (one `message`
field holding the JSON envelope), so the message goes through the same validation and
idempotency path at intake."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import redis

from schemas.envelope import Envelope


def encode_envelope(envelope: Envelope | dict[str, Any] | str) -> str:
    if isinstance(envelope, Envelope):
        return envelope.model_dump_json(exclude_none=True)
    if isinstance(envelope, dict):
        return json.dumps(envelope, ensure_ascii=False)
    return envelope


def publish(
    client: redis.Redis, envelope: Envelope | dict[str, Any] | str, stream: str = "ticketrelay:bookings"
) -> str:
    """Append one envelope; returns the stream entry id. Validation happens at intake."""
    entry_id = client.xadd(stream, {"message": encode_envelope(envelope)})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def publish_lines(client: redis.Redis, lines: Iterable[str], stream: str) -> int:
    """Publish a JSONL file's lines as they are (blank lines skipped), pipelined."""
    count = 0
    pipe = client.pipeline(transaction=False)
    for line in lines:
        line = line.strip()
        if not line:
            continue
        pipe.xadd(stream, {"message": line})
        count += 1
        if count % 500 == 0:
            pipe.execute()
    pipe.execute()
    return count
