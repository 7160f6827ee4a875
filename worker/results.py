"""Result messages onto the callback stream, and dead letters."""

from __future__ import annotations

import logging
import re
from typing import Any

import redis

from schemas.envelope import REPLY_TO_PATTERN
from schemas.errors import clean_text
from schemas.result import ResultMessage, Ticket
from schemas.table import TicketIssuance
from worker.ledger import row_error, utcnow
from worker.settings import get_settings, is_sandbox_account

log = logging.getLogger("ticketrelay.results")

_STREAM_NAME = re.compile(REPLY_TO_PATTERN)
MAX_DEAD_REASON = 300


def result_from_row(row: TicketIssuance, sandbox: bool | None = None) -> ResultMessage:
    """`sandbox` None: as this process's accounts say of the row's account."""
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
        error=row_error(row),
        metadata=row.message_metadata or {},
        completed_at=row.completed_at or utcnow(),
        sandbox=is_sandbox_account(row.provider, row.account) if sandbox is None else sandbox,
        # 0 only for a row from before revisions were kept that is not final yet
        revision=max(int(getattr(row, "revision", 0) or 0), 1),
        # 1.1 cancellations: what the row is (an issue, or a cancel of `cancels`).
        operation=getattr(row, "operation", None) or "issue",
        cancels=getattr(row, "cancels", None),
    )


def encode_result(result: ResultMessage) -> str:
    return result.model_dump_json()


def _target(stream: str, default: str) -> str:
    """The stream a result goes to. A reply_to is checked at intake, but a row may predate the
    check (or come from a re-issue file): a name outside the plain charset never becomes a
    Redis key, its result goes to the default stream instead. The configured stream itself is
    the operator's choice (a Redis Cluster hash tag may need braces) and is always taken."""
    if stream == default or _STREAM_NAME.fullmatch(stream):
        return stream
    log.warning(
        "reply_to is not a valid stream name; result sent to the default stream",
        extra={"event": "reply_to_invalid"},
    )
    return default


def _default_stream(default: str | None) -> str:
    return default if default is not None else get_settings().results_stream


def publish_result(
    client: redis.Redis,
    stream: str,
    result: ResultMessage,
    maxlen: int | None = None,
    default_stream: str | None = None,
) -> None:
    """`maxlen` (here and below; None or 0: unbounded) caps the stream as we write, so Redis
    (noeviction) never fills up. Approximate (`~`): Redis drops whole macro-nodes only, which
    costs next to nothing per write; the stream stays a little above the cap, not at it.
    `default_stream` (default: the configured results stream) takes a result whose reply_to
    cannot: an invalid name, or a key that holds something other than a stream."""
    publish_results(client, [(stream, result)], maxlen, default_stream)


def publish_results(
    client: redis.Redis,
    results: list[tuple[str, ResultMessage]],
    maxlen: int | None = None,
    default_stream: str | None = None,
) -> None:
    """Several results, each onto its own reply_to stream, in one round trip. A producer's
    reply_to can refuse a result for good (its key holds a string, a list ...): that result
    goes to the default stream, and the others of the batch are not held up by it."""
    if not results:
        return
    default = _default_stream(default_stream)
    targets = [(_target(stream, default), encode_result(result)) for stream, result in results]
    pipe = client.pipeline(transaction=False)
    for stream, text in targets:
        pipe.xadd(stream, {"result": text}, maxlen=maxlen or None, approximate=True)
    # A lost connection still raises; only per-command refusals come back as values.
    answers = pipe.execute(raise_on_error=False)
    refused = [
        text
        for (stream, text), answer in zip(targets, answers, strict=True)
        if isinstance(answer, redis.ResponseError) and stream != default
    ]
    failed_default = [
        answer
        for (stream, _text), answer in zip(targets, answers, strict=True)
        if isinstance(answer, Exception) and stream == default
    ]
    if failed_default:  # our own stream refused: not the producer's doing, fail loudly
        raise failed_default[0]
    if refused:
        log.warning(
            "a reply_to stream refused %d result(s); sent to the default stream",
            len(refused),
            extra={"event": "reply_to_refused"},
        )
        pipe = client.pipeline(transaction=False)
        for text in refused:
            pipe.xadd(default, {"result": text}, maxlen=maxlen or None, approximate=True)
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
            # Never a producer's control characters or an unbounded text in our own field.
            "dead_reason": clean_text(reason, MAX_DEAD_REASON),
            "dead_entry_id": entry_id or "",
            "dead_stream": source_stream,
            "dead_at": utcnow().isoformat(),
        }
    )
    client.xadd(dead_stream, entry, maxlen=maxlen or None, approximate=True)
