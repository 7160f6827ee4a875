"""Result messages onto the callback stream, and dead letters."""

from __future__ import annotations

from typing import Any

import redis

from schemas.result import ResultError, ResultMessage, Ticket
from schemas.table import TicketIssuance
from worker.ledger import utcnow
from worker.settings import is_sandbox_account


def result_from_row(row: TicketIssuance, sandbox: bool | None = None) -> ResultMessage:
    """`sandbox` None: as this process's accounts say of the row's account."""
    error = None
    if row.error_type is not None:
        error = ResultError(
            type=row.error_type,
            message=row.error_message or "",
            http_status=row.http_status,
            retryable=bool(row.error_retryable),
        )
    return ResultMessage(
        message_id=row.message_id,
        idempotency_key=row.idempotency_key,
        provider=row.provider,
        account=row.account,
        generation=row.generation,
        status=row.status,  # type: ignore[arg-type]
        attempts=row.attempts,
        provider_reference=row.provider_reference,
        tickets=[Ticket(**t) for t in row.tickets or []],
        error=error,
        metadata=row.message_metadata or {},
        completed_at=row.completed_at or utcnow(),
        sandbox=is_sandbox_account(row.provider, row.account) if sandbox is None else sandbox,
    )


def encode_result(result: ResultMessage) -> str:
    return result.model_dump_json()


def publish_result(
    client: redis.Redis, stream: str, result: ResultMessage, maxlen: int | None = None
) -> None:
    """`maxlen` (here and below; None or 0: unbounded) caps the stream as we write, so Redis
    (noeviction) never fills up. Approximate (`~`): Redis drops whole macro-nodes only, which
    costs next to nothing per write; the stream stays a little above the cap, not at it."""
    client.xadd(stream, {"result": encode_result(result)}, maxlen=maxlen or None, approximate=True)


def publish_results(
    client: redis.Redis, results: list[tuple[str, ResultMessage]], maxlen: int | None = None
) -> None:
    """Several results, each onto its own reply_to stream, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for stream, result in results:
        pipe.xadd(stream, {"result": encode_result(result)}, maxlen=maxlen or None, approximate=True)
    pipe.execute()


def dead_letter(
    client: redis.Redis,
    dead_stream: str,
    fields: dict[Any, Any],
    reason: str,
    entry_id: str | None,
    source_stream: str,
    maxlen: int | None = None,
) -> None:
    """Keep the entry untouched, with our reason beside it. Our own fields carry a `dead_`
    prefix; an original field of the same name is kept under `orig_` so nothing is lost."""
    entry: dict[Any, Any] = {}
    for key, value in fields.items():
        # Compared as bytes: a field name need not be UTF-8 (b"\x80" must not crash intake).
        name = key if isinstance(key, bytes) else str(key).encode()
        entry[b"orig_" + name if name.startswith(b"dead_") else key] = value
    entry.update(
        {
            "dead_reason": reason,
            "dead_entry_id": entry_id or "",
            "dead_stream": source_stream,
            "dead_at": utcnow().isoformat(),
        }
    )
    client.xadd(dead_stream, entry, maxlen=maxlen or None, approximate=True)
