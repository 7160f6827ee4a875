"""The ticket_issuances state machine. SQL is the truth; every step is a single statement
that can be repeated safely, so a crash anywhere is repaired by doing the step again.

    queued -> in_progress -> issued | failed | needs_review
                  |  ^
                  v  |
               retrying
    (rejected is written directly by intake and never moves)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from schemas.result import ResultError, Ticket
from schemas.statuses import ACTIVE_STATUSES, FINAL_STATUSES, Status
from schemas.table import TicketIssuance

T = TicketIssuance.__table__  # type: ignore[attr-defined]
C = T.c


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite gives back what it was given; make comparisons safe either way.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class NewBooking:
    idempotency_key: str
    message_id: str
    provider: str
    account: str
    generation: int
    payload: dict[str, Any] | None
    payload_sha256: str
    reply_to: str
    metadata: dict[str, str]


def _insert(engine: Engine, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING. True when this call created it."""
    dialect = engine.dialect.name
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(T).values(**values)
    elif dialect == "sqlite":
        stmt = sqlite.insert(T).values(**values)
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {dialect}")
    stmt = stmt.on_conflict_do_nothing(index_elements=["idempotency_key"]).returning(C.id)
    with engine.begin() as conn:
        return conn.execute(stmt).first() is not None


def _row_values(b: NewBooking, status: Status, now: datetime) -> dict[str, Any]:
    return {
        "idempotency_key": b.idempotency_key,
        "message_id": b.message_id,
        "provider": b.provider,
        "account": b.account,
        "generation": b.generation,
        "status": status.value,
        "attempts": 0,
        "tickets": [],
        "created_at": now,
        "updated_at": now,
        "payload": b.payload,
        "payload_sha256": b.payload_sha256,
        "reply_to": b.reply_to,
        "message_metadata": b.metadata,
        "in_doubt": False,
    }


def create_queued(engine: Engine, booking: NewBooking) -> bool:
    return _insert(engine, _row_values(booking, Status.QUEUED, utcnow()))


def create_rejected(engine: Engine, booking: NewBooking, error: ResultError) -> bool:
    now = utcnow()
    values = _row_values(booking, Status.REJECTED, now)
    values.update(
        error_type=error.type,
        error_message=error.message[:1024],
        error_retryable=False,
        completed_at=now,
    )
    return _insert(engine, values)


def get(engine: Engine, key: str) -> TicketIssuance | None:
    with engine.connect() as conn:
        row = conn.execute(select(T).where(C.idempotency_key == key)).mappings().first()
    return TicketIssuance(**row) if row is not None else None


def is_final(row: TicketIssuance) -> bool:
    return row.status in FINAL_STATUSES


def claimable(row: TicketIssuance, now: datetime, early_s: float = 1.0) -> str | None:
    """None when this row may be claimed now, else why not (for the log)."""
    if is_final(row):
        return "final"
    lease_until = _aware(row.lease_until)
    if row.status == Status.IN_PROGRESS and lease_until is not None and lease_until > now:
        return "leased"
    next_at = _aware(row.next_attempt_at)
    if row.status == Status.RETRYING and next_at is not None and next_at > now + timedelta(seconds=early_s):
        return "not_due"
    return None


def claim(engine: Engine, row: TicketIssuance, token: str, lease_s: float) -> bool:
    """Compare-and-set on the row as we read it: of two workers holding the same row, only one
    wins. The attempt is counted before the call, so a crash mid-call still counts."""
    now = utcnow()
    owner_match = C.lease_owner.is_(None) if row.lease_owner is None else C.lease_owner == row.lease_owner
    stmt = (
        update(T)
        .where(
            C.idempotency_key == row.idempotency_key,
            C.status == row.status,
            C.status.in_(list(ACTIVE_STATUSES)),  # a final row is never claimed again
            C.attempts == row.attempts,
            owner_match,
        )
        .values(
            status=Status.IN_PROGRESS.value,
            attempts=C.attempts + 1,
            lease_owner=token,
            lease_until=now + timedelta(seconds=lease_s),
            # A claim taken over from an in_progress row means the last call never reported:
            # it may have created tickets.
            in_doubt=or_(C.in_doubt, C.status == Status.IN_PROGRESS.value),
            updated_at=now,
        )
    )
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def _finish(
    engine: Engine,
    key: str,
    token: str | None,
    values: dict[str, Any],
) -> TicketIssuance | None:
    """The row as recorded (UPDATE ... RETURNING: no second read), or None when this caller
    may not record (lease lost, or already final)."""
    now = utcnow()
    values = {**values, "updated_at": now, "lease_owner": None, "lease_until": None}
    if values.get("status") in FINAL_STATUSES:
        values["completed_at"] = now
        values["next_attempt_at"] = None
    conds = [C.idempotency_key == key]
    if token is not None:
        # Only the holder of the lease records; a worker that lost its lease keeps quiet.
        conds += [C.lease_owner == token, C.status == Status.IN_PROGRESS.value]
    else:
        conds.append(C.status.not_in(list(FINAL_STATUSES)))
    with engine.begin() as conn:
        row = conn.execute(update(T).where(and_(*conds)).values(**values).returning(*T.c)).mappings().first()
    return TicketIssuance(**row) if row is not None else None


def _error_values(error: ResultError | None) -> dict[str, Any]:
    if error is None:
        return {"error_type": None, "error_message": None, "http_status": None, "error_retryable": None}
    return {
        "error_type": error.type[:64],
        "error_message": error.message[:1024],
        "http_status": error.http_status,
        "error_retryable": error.retryable,
    }


def record_issued(
    engine: Engine,
    key: str,
    token: str,
    tickets: list[Ticket],
    provider_reference: str | None,
) -> TicketIssuance | None:
    return _finish(
        engine,
        key,
        token,
        {
            "status": Status.ISSUED.value,
            "tickets": [t.model_dump() for t in tickets],
            "provider_reference": provider_reference,
            "in_doubt": False,
            **_error_values(None),
        },
    )


def record_final_error(
    engine: Engine, key: str, token: str | None, status: Status, error: ResultError, in_doubt: bool
) -> TicketIssuance | None:
    return _finish(engine, key, token, {"status": status.value, "in_doubt": in_doubt, **_error_values(error)})


def record_retry(
    engine: Engine, key: str, token: str, error: ResultError, in_doubt: bool, delay_s: float
) -> TicketIssuance | None:
    values = {
        "status": Status.RETRYING.value,
        "in_doubt": in_doubt,
        "next_attempt_at": utcnow() + timedelta(seconds=delay_s),
        **_error_values(error),
    }
    return _finish(engine, key, token, values)


def mark_callback_sent(engine: Engine, key: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(T)
            .where(C.idempotency_key == key, C.callback_sent_at.is_(None))
            .values(callback_sent_at=utcnow())
        )


def stale_keys(engine: Engine, stale_after_s: float, limit: int) -> list[str]:
    """Rows that stopped moving: queued and never picked up (a lost Celery message, a Redis
    that restarted empty), in_progress past their lease (a killed worker), retrying past their
    next attempt (a parked long wait, or a retry message that was lost)."""
    now = utcnow()
    stale = now - timedelta(seconds=stale_after_s)
    cond = or_(
        and_(C.status == Status.QUEUED.value, C.updated_at < stale),
        and_(C.status == Status.IN_PROGRESS.value, C.lease_until < now),
        and_(C.status == Status.RETRYING.value, C.next_attempt_at < stale),
        # A parked wait (longer than a Celery countdown may be) is due now.
        and_(
            C.status == Status.RETRYING.value,
            C.next_attempt_at < now,
            C.updated_at < stale,
        ),
    )
    with engine.begin() as conn:
        keys = list(
            conn.execute(select(C.idempotency_key).where(cond).order_by(C.updated_at).limit(limit)).scalars()
        )
        if keys:
            # Touch queued rows so they are re-driven once per stale period, not every sweep.
            conn.execute(
                update(T)
                .where(C.idempotency_key.in_(keys), C.status == Status.QUEUED.value)
                .values(updated_at=now)
            )
    return keys


def unpublished(engine: Engine, grace_s: float, limit: int) -> list[TicketIssuance]:
    """Final rows whose result never reached the callback stream."""
    cutoff = utcnow() - timedelta(seconds=grace_s)
    with engine.connect() as conn:
        rows = conn.execute(
            select(T)
            .where(
                C.status.in_(list(FINAL_STATUSES)),
                C.callback_sent_at.is_(None),
                C.completed_at < cutoff,
            )
            .order_by(C.completed_at)
            .limit(limit)
        ).mappings()
        return [TicketIssuance(**r) for r in rows]


def counts_by_status(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(select(C.provider, C.status, func.count()).group_by(C.provider, C.status))
        return {(p, s): n for p, s, n in rows}
