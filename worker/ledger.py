"""The ticket_issuances state machine. SQL is the truth; every step is a single statement
that can be repeated safely, so a crash anywhere is repaired by doing the step again.

    queued -> in_progress -> issued | failed | needs_review
                  |  ^
                  v  |
               retrying
    (rejected is written directly by intake and never moves)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, insert, or_, select, update

from schemas.result import ResultError, Ticket
from schemas.statuses import ACTIVE_STATUSES, FINAL_STATUSES, Status
from schemas.table import ReissueRun, TicketAttempt, TicketIssuance
from worker.db import group_write, insert_new, writing

T = TicketIssuance.__table__  # type: ignore[attr-defined]
C = T.c
AT = TicketAttempt.__table__  # type: ignore[attr-defined]
AC = AT.c
RUNS = ReissueRun.__table__  # type: ignore[attr-defined]


class _Row:
    """A ticket_issuances row as read: plain attributes named after the columns. Building the
    SQLModel object instead cost 0.2 ms per row (its ORM instrumentation), twice per booking;
    nothing here needs the ORM. Typed as TicketIssuance: same names, same types."""

    __slots__ = tuple(c.name for c in C)

    def __init__(self, mapping: Any) -> None:
        for name in self.__slots__:
            setattr(self, name, mapping[name])

    def model_dump(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:  # no payload: it holds personal data
        return f"<row {getattr(self, 'idempotency_key', '?')} {getattr(self, 'status', '?')}>"


def as_row(mapping: Any) -> TicketIssuance:
    return cast(TicketIssuance, _Row(mapping))


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
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
    # 1.1: a cancel names the booking it cancels.
    operation: str = "issue"
    cancels: str | None = None


def _insert(engine: Engine, values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT (idempotency_key) DO NOTHING. True when this call created it."""
    with writing(engine) as conn:
        return conn.execute(_insert_stmt(engine, values)).first() is not None


def _insert_stmt(engine: Engine, values: dict[str, Any]) -> Any:
    return insert_new(engine.dialect.name, T, values, ["idempotency_key"])


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
        "operation": b.operation,
        "cancels": b.cancels,
    }


def create_queued(engine: Engine, booking: NewBooking) -> bool:
    return _insert(engine, _row_values(booking, Status.QUEUED, utcnow()))


def create_queued_many(engine: Engine, bookings: list[NewBooking]) -> set[str]:
    """Insert a batch of accepted bookings in one transaction; the keys this call created (a
    key already present, from a resend, is left as it is and not returned)."""
    if not bookings:
        return set()
    now = utcnow()
    created: set[str] = set()
    with writing(engine) as conn:
        for b in bookings:
            # One statement per row, in one transaction: each says whether it inserted (a
            # resend inserts nothing), and the commit, once per read, is what costs.
            if conn.execute(_insert_stmt(engine, _row_values(b, Status.QUEUED, now))).first() is not None:
                created.add(b.idempotency_key)
    return created


def create_rejected(engine: Engine, booking: NewBooking, error: ResultError) -> bool:
    now = utcnow()
    values = _row_values(booking, Status.REJECTED, now)
    values.update(
        error_type=error.type,
        error_message=error.message[:1024],
        error_retryable=False,
        completed_at=now,
        revision=1,  # its first (and only) final result
    )
    return _insert(engine, values)


def get(engine: Engine, key: str) -> TicketIssuance | None:
    with engine.connect() as conn:
        row = conn.execute(select(T).where(C.idempotency_key == key)).mappings().first()
    return as_row(row) if row is not None else None


_GET_MANY = select(T).where(C.idempotency_key.in_(bindparam("b_keys", expanding=True)))


def get_many(engine: Engine, keys: list[str]) -> dict[str, TicketIssuance]:
    """The rows of a batch in one SELECT; keys without a row are absent from the answer."""
    if not keys:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(_GET_MANY, {"b_keys": keys}).mappings().all()
    return {r["idempotency_key"]: as_row(r) for r in rows}


def is_final(row: TicketIssuance) -> bool:
    return row.status in FINAL_STATUSES


def claimable(row: TicketIssuance, now: datetime, early_s: float = 1.0) -> str | None:
    """None when this row may be claimed now, else why not (for the log)."""
    if is_final(row):
        return "final"
    lease_until = as_utc(row.lease_until)
    if row.status == Status.IN_PROGRESS and lease_until is not None and lease_until > now:
        return "leased"
    next_at = as_utc(row.next_attempt_at)
    if row.status == Status.RETRYING and next_at is not None and next_at > now + timedelta(seconds=early_s):
        return "not_due"
    return None


# The hot statements are built once, with bound parameters: building an UPDATE with its
# WHERE clause per call cost more CPU than executing it (profiled: 0.7 ms per booking).
def _claim_stmt(owner_is_none: bool, with_codes: bool) -> Any:
    owner_match = C.lease_owner.is_(None) if owner_is_none else C.lease_owner == bindparam("b_owner")
    values: dict[Any, Any] = {
        "status": Status.IN_PROGRESS.value,
        "attempts": C.attempts + 1,
        "lease_owner": bindparam("b_token"),
        "lease_until": bindparam("b_lease_until"),
        # A claim taken over from an in_progress row means the last call never reported:
        # it may have created tickets.
        "in_doubt": or_(C.in_doubt, C.status == Status.IN_PROGRESS.value),
        "updated_at": bindparam("b_now"),
        # The first claim dates the key's first provider call (e-guma keys expire after 72 h).
        "first_attempt_at": func.coalesce(C.first_attempt_at, bindparam("b_now")),
    }
    if with_codes:
        # Only for a claim of attempts == 0 (the WHERE pins the attempts read): the codes are
        # stored by the same statement that counts the first call, so whoever wins the claim
        # sends exactly the codes stored, and no later claim replaces them.
        values["qr_codes"] = func.coalesce(C.qr_codes, bindparam("b_codes", type_=C.qr_codes.type))
    return (
        update(T)
        .where(
            C.idempotency_key == bindparam("b_key"),
            C.status == bindparam("b_status"),
            C.status.in_(list(ACTIVE_STATUSES)),  # a final row is never claimed again
            C.attempts == bindparam("b_attempts"),
            owner_match,
        )
        .values(values)
    )


_CLAIM = {(owner, codes): _claim_stmt(owner, codes) for owner in (True, False) for codes in (True, False)}


def claim(
    engine: Engine,
    row: TicketIssuance,
    token: str,
    lease_s: float,
    qr_codes: list[str | None] | None = None,
) -> bool:
    """Compare-and-set on the row as we read it: of two workers holding the same row, only one
    wins. The attempt is counted before the call, so a crash mid-call still counts.

    `qr_codes` (a row's first claim only, attempts == 0) are stored with it; a row that has
    already made a call never gets new codes."""
    if qr_codes is not None and row.attempts != 0:
        raise ValueError("codes are stored only by a row's first claim")
    now = utcnow()
    params: dict[str, Any] = {
        "b_key": row.idempotency_key,
        "b_status": row.status,
        "b_attempts": row.attempts,
        "b_owner": row.lease_owner,
        "b_token": token,
        "b_lease_until": now + timedelta(seconds=lease_s),
        "b_now": now,
    }
    if row.lease_owner is None:
        del params["b_owner"]
    if qr_codes is not None:
        params["b_codes"] = qr_codes
    stmt = _CLAIM[(row.lease_owner is None, qr_codes is not None)]
    return group_write(engine, lambda conn: conn.execute(stmt, params).rowcount == 1)


@dataclass(frozen=True)
class AttemptNote:
    """What the issue path knows of one provider call, for the attempt history
    (ticket_attempts), written in the transaction that records the call's outcome. `message`
    is already scrubbed (worker/redaction.py)."""

    number: int
    started_at: datetime
    duration_ms: float | None
    worker: str
    message: str | None = None
    probe: bool = False


_OUTCOME_OF_STATUS = {Status.RETRYING.value: "retry"}


@lru_cache(maxsize=64)
def _finish_stmt(columns: tuple[str, ...], leased: bool, final: bool, uncharge: bool) -> Any:
    conds = [C.idempotency_key == bindparam("b_key")]
    if leased:
        # Only the holder of the lease records; a worker that lost its lease keeps quiet.
        conds += [C.lease_owner == bindparam("b_token"), C.status == Status.IN_PROGRESS.value]
    else:
        conds.append(C.status.not_in(list(FINAL_STATUSES)))
    values: dict[Any, Any] = {C[name]: bindparam(f"v_{name}", type_=C[name].type) for name in columns}
    if final:
        # Each final result of a key is one revision more (contract 1.1): the first is 1.
        values[C.revision] = C.revision + 1
    if uncharge:
        # A failed probe: counted in `attempts` (calls made), not against the booking's budget.
        values[C.attempts_base] = C.attempts_base + 1
    return update(T).where(and_(*conds)).values(values).returning(*T.c)


_INSERT_ATTEMPT = insert(AT)  # built once: its values come as parameters


def _attempt_values(
    key: str, note: AttemptNote, values: dict[str, Any], recorded: bool, now: datetime
) -> dict[str, Any]:
    status = str(values.get("status"))
    return {
        "idempotency_key": key,
        "attempt": note.number,
        "started_at": note.started_at,
        "recorded_at": now,
        "duration_ms": note.duration_ms,
        "worker": note.worker[:128],
        "outcome": _OUTCOME_OF_STATUS.get(status, status) if recorded else "lease_lost",
        "http_status": values.get("http_status"),
        "error_type": values.get("error_type"),
        "message": note.message[:1024] if note.message else None,
        "in_doubt": bool(values.get("in_doubt")),
        "probe": note.probe,
    }


def _finish(
    engine: Engine,
    key: str,
    token: str | None,
    values: dict[str, Any],
    note: AttemptNote | None = None,
    uncharge: bool = False,
) -> TicketIssuance | None:
    """The row as recorded (UPDATE ... RETURNING: no second read), or None when this caller
    may not record (lease lost, or already final). `note`: the call's attempt history row, in
    the same transaction (also when the lease was lost: the call was made all the same)."""
    now = utcnow()
    values = {**values, "updated_at": now, "lease_owner": None, "lease_until": None}
    final = values.get("status") in FINAL_STATUSES
    if final:
        values["completed_at"] = now
        values["next_attempt_at"] = None
    columns = tuple(sorted(values))
    params = {f"v_{name}": values[name] for name in columns}
    params["b_key"] = key
    if token is not None:
        params["b_token"] = token
    stmt = _finish_stmt(columns, token is not None, final, uncharge)

    def write(conn: Connection) -> Any:
        row = conn.execute(stmt, params).mappings().first()
        if note is not None:
            conn.execute(_INSERT_ATTEMPT, _attempt_values(key, note, values, row is not None, now))
        return row

    row = group_write(engine, write)
    return as_row(row) if row is not None else None


def row_error(row: TicketIssuance) -> ResultError | None:
    """The error a row records, as results and the next attempt see it (the inverse of
    _error_values)."""
    if row.error_type is None:
        return None
    return ResultError(
        type=row.error_type,
        message=row.error_message or "",
        http_status=row.http_status,
        retryable=bool(row.error_retryable),
    )


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
    note: AttemptNote | None = None,
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
        note,
    )


def record_final_error(
    engine: Engine,
    key: str,
    token: str | None,
    status: Status,
    error: ResultError,
    in_doubt: bool,
    tickets: list[Ticket] | None = None,
    provider_reference: str | None = None,
    note: AttemptNote | None = None,
) -> TicketIssuance | None:
    """A final status with an error. `tickets` and `provider_reference`: what the provider did
    confirm of a booking that still needs review (the operator's starting point). `note`: the
    call that ended it, where one did (a give-up before any call has none)."""
    values: dict[str, Any] = {"status": status.value, "in_doubt": in_doubt, **_error_values(error)}
    if tickets:
        values["tickets"] = [t.model_dump() for t in tickets]
    if provider_reference is not None:
        values["provider_reference"] = provider_reference
    return _finish(engine, key, token, values, note)


def record_retry(
    engine: Engine,
    key: str,
    token: str,
    error: ResultError,
    in_doubt: bool,
    delay_s: float,
    note: AttemptNote | None = None,
    charge: bool = True,
) -> TicketIssuance | None:
    """`charge=False`: a failed probe during an outage (docs/outages.md): the call counts in
    `attempts` (calls made) but not against the booking's budget (attempts_base goes up too)."""
    values = {
        "status": Status.RETRYING.value,
        "in_doubt": in_doubt,
        "next_attempt_at": utcnow() + timedelta(seconds=delay_s),
        **_error_values(error),
    }
    return _finish(engine, key, token, values, note, uncharge=not charge)


def park(engine: Engine, row: TicketIssuance, wait_s: float, why: ResultError) -> bool:
    """Put a queued or retrying row (as read) in `retrying`, due in `wait_s`, without counting
    an attempt (the account's circuit is open, docs/outages.md). Compare-and-set on status and
    attempts, like the claim: a row another worker claimed meanwhile is left alone (False).
    `why` becomes the row's error only where it has none, so the last provider error stays
    what a give-up reports."""
    if row.status not in (Status.QUEUED, Status.RETRYING):
        return False
    now = utcnow()
    stmt = (
        update(T)
        .where(
            C.idempotency_key == row.idempotency_key,
            C.status == row.status,
            C.attempts == row.attempts,
            C.lease_owner.is_(None),
        )
        .values(
            status=Status.RETRYING.value,
            next_attempt_at=now + timedelta(seconds=max(wait_s, 0.0)),
            updated_at=now,
            error_type=func.coalesce(C.error_type, why.type[:64]),
            error_message=func.coalesce(C.error_message, why.message[:1024]),
            error_retryable=func.coalesce(C.error_retryable, why.retryable),
        )
    )
    with writing(engine) as conn:
        return bool(conn.execute(stmt).rowcount == 1)


def uncharge_attempt(engine: Engine, key: str, attempts: int) -> bool:
    """Take the attempt numbered `attempts`, just recorded as a retry, off the booking's budget.
    The issue path passes charge=False to record_retry instead (one statement); this is for a
    caller that learns only afterwards that the call was a failed probe."""
    stmt = (
        update(T)
        .where(
            C.idempotency_key == key,
            C.attempts == attempts,
            C.status == Status.RETRYING.value,
            C.attempts_base < C.attempts,
        )
        .values(attempts_base=C.attempts_base + 1)
    )
    with writing(engine) as conn:
        return bool(conn.execute(stmt).rowcount == 1)


def mark_callback_sent(engine: Engine, key: str, also: Callable[[Connection], object] | None = None) -> None:
    """`also` runs in the same transaction: the webhook outbox queues the result's callbacks
    there, so a result is never marked published without them."""
    with writing(engine) as conn:
        conn.execute(
            update(T)
            .where(C.idempotency_key == key, C.callback_sent_at.is_(None))
            .values(callback_sent_at=utcnow())
        )
        if also is not None:
            also(conn)


_MARK_SENT = (
    update(T)
    .where(C.idempotency_key.in_(bindparam("b_keys", expanding=True)), C.callback_sent_at.is_(None))
    .values(callback_sent_at=bindparam("b_now"))
)


def mark_callbacks_sent(
    engine: Engine, keys: list[str], also: Callable[[Connection], object] | None = None
) -> None:
    """mark_callback_sent for a batch whose results went out in one pipeline: one statement
    (and `also`, in the same transaction)."""
    if not keys:
        return
    with writing(engine) as conn:
        conn.execute(_MARK_SENT, {"b_keys": keys, "b_now": utcnow()})
        if also is not None:
            also(conn)


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
    with writing(engine) as conn:
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
        return [as_row(r) for r in rows]


def counts_by_status(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(select(C.provider, C.status, func.count()).group_by(C.provider, C.status))
        return {(p, s): n for p, s, n in rows}


# =============================================================================================
# Queries and transitions for operations (bulk re-issuance, `ticketrelay status`, the metrics
# exporter). They live here so that this module stays the only one that speaks SQL to
# ticket_issuances: a column or a transition changes in one place.
# =============================================================================================


@dataclass(frozen=True)
class RowFilter:
    """Which rows an operation works on. Bounds are datetimes already resolved by the caller."""

    statuses: tuple[str, ...]
    provider: str | None = None
    account: str | None = None
    retryable_only: bool = False
    created_from: datetime | None = None
    created_before: datetime | None = None
    # Rows this re-issuance run already drove are left out (a resumed run never drives twice).
    not_driven_by: str | None = None


def _filter_cond(f: RowFilter) -> Any:
    conds = [C.status.in_(list(f.statuses))]
    if f.provider:
        conds.append(C.provider == f.provider)
    if f.account:
        conds.append(C.account == f.account)
    if f.retryable_only:
        conds.append(C.error_retryable.is_(True))
    if f.created_from is not None:
        conds.append(C.created_at >= f.created_from)
    if f.created_before is not None:
        conds.append(C.created_at < f.created_before)
    if f.not_driven_by is not None:
        conds.append(or_(C.reissue_run.is_(None), C.reissue_run != f.not_driven_by))
    return and_(*conds)


def count_matching(engine: Engine, f: RowFilter) -> dict[tuple[str, str], int]:
    """How many rows the filter matches, by (provider, status)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(C.provider, C.status, func.count()).where(_filter_cond(f)).group_by(C.provider, C.status)
        )
        return {(p, s): n for p, s, n in rows}


def matching_after(engine: Engine, f: RowFilter, after_id: int, limit: int) -> list[TicketIssuance]:
    """The next `limit` matching rows in id order after `after_id`: a run pages through its
    selection without holding it all, and without offsets that shift as rows change."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(T).where(_filter_cond(f), C.id > after_id).order_by(C.id).limit(limit)
        ).mappings()
        return [as_row(r) for r in rows]


def requeue_for_run(engine: Engine, key: str, from_status: str, run_id: str) -> bool:
    """A final row (failed, needs_review) back to queued for a re-issuance run, keeping its
    idempotency key. Compare-and-set on the status read: False when the row moved meanwhile.
    attempts_base remembers the attempts made so far, so the drive gets a full budget.
    A booking its producer has cancelled is never re-driven: it would be issued after the
    cancel was answered."""
    cancel = T.alias("cancel")
    cancelled_by_producer = (
        select(cancel.c.id)
        .where(
            cancel.c.operation == "cancel",
            cancel.c.cancels == C.message_id,
            cancel.c.provider == C.provider,
            cancel.c.account == C.account,
        )
        .exists()
    )
    with writing(engine) as conn:
        changed = conn.execute(
            update(T)
            .where(
                C.idempotency_key == key,
                C.status == from_status,
                C.cancel_key.is_(None),
                ~cancelled_by_producer,
            )
            .values(
                status=Status.QUEUED.value,
                reissue_run=run_id,
                attempts_base=C.attempts,
                # the give-up time limit counts from this drive (drive_started_at)
                redriven_at=utcnow(),
                lease_owner=None,
                lease_until=None,
                next_attempt_at=None,
                completed_at=None,
                callback_sent_at=None,
                updated_at=utcnow(),
            )
        ).rowcount
    return bool(changed)


def latest_generation(engine: Engine, provider: str, account: str, message_id: str) -> int:
    with engine.connect() as conn:
        top = conn.execute(
            select(func.max(C.generation)).where(
                C.provider == provider, C.account == account, C.message_id == message_id
            )
        ).scalar_one()
    return int(top or 0)


def stamp_run(engine: Engine, keys: list[str], run_id: str) -> None:
    """Mark rows as belonging to a re-issuance run (its report counts only its own rows)."""
    if not keys:
        return
    with writing(engine) as conn:
        conn.execute(update(T).where(C.idempotency_key.in_(keys)).values(reissue_run=run_id))


def active_in_run(engine: Engine, run_id: str) -> int:
    """Rows of a run not final yet: what the run has in flight."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(T)
                .where(C.reissue_run == run_id, C.status.in_(list(ACTIVE_STATUSES)))
            ).scalar_one()
        )


def count_in_run(engine: Engine, run_id: str, first_generation_only: bool) -> int:
    with engine.connect() as conn:
        cond = C.reissue_run == run_id
        if first_generation_only:
            cond = and_(cond, C.generation == 0)
        return int(conn.execute(select(func.count()).select_from(T).where(cond)).scalar_one())


def run_counts(engine: Engine, run_ids: list[str]) -> dict[str, dict[str, int]]:
    """Rows of each run by status (runs without rows are absent)."""
    if not run_ids:
        return {}
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(C.reissue_run, C.status, func.count())
            .where(C.reissue_run.in_(run_ids))
            .group_by(C.reissue_run, C.status)
        )
        for run_id, status, n in rows:
            out.setdefault(run_id, {})[status] = n
    return out


def run_counts_by_provider(engine: Engine, run_id: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(C.provider, C.status, func.count())
            .where(C.reissue_run == run_id)
            .group_by(C.provider, C.status)
        )
        for provider, status, n in rows:
            out.setdefault(provider, {})[status] = n
    return out


def run_failures(engine: Engine, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The most frequent reasons rows of a run ended failed or needs_review."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(C.provider, C.error_type, C.error_message, func.count())
            .where(
                C.reissue_run == run_id,
                C.status.in_([Status.FAILED.value, Status.NEEDS_REVIEW.value]),
            )
            .group_by(C.provider, C.error_type, C.error_message)
            .order_by(func.count().desc())
            .limit(limit)
        )
        return [{"provider": p, "error_type": t, "reason": m, "count": n} for p, t, m, n in rows]


@dataclass(frozen=True)
class BookingGroup:
    provider: str
    account: str
    status: str
    count: int
    oldest_created_at: datetime | None


def booking_groups(engine: Engine) -> list[BookingGroup]:
    """Bookings by provider, account and status with the oldest created_at of each: one scan
    gives both the counts and the age of the oldest unfinished booking (status and metrics)."""
    stmt = select(C.provider, C.account, C.status, func.count(), func.min(C.created_at)).group_by(
        C.provider, C.account, C.status
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [BookingGroup(p, a, s, int(n), as_utc(oldest)) for p, a, s, n, oldest in rows]


def oldest_unfinished(groups: list[BookingGroup]) -> datetime | None:
    """created_at of the oldest booking not final yet, from booking_groups()."""
    found = [g.oldest_created_at for g in groups if g.status in ACTIVE_STATUSES and g.oldest_created_at]
    return min(found) if found else None


# =============================================================================================
# Retention and erasure of personal data (worker/retention.py, tasks/retention.py,
# worker/ops/purge.py, docs/data-protection.md). A row's dependents (its webhook outbox
# entries and, where that table exists, its attempt history) go in the same transaction.
# Imports here, not at the top, so that this block merges as one piece.
# =============================================================================================

from sqlalchemy import inspect as sa_inspect  # noqa: E402
from sqlalchemy import null as sa_null  # noqa: E402
from sqlalchemy import text as sa_text  # noqa: E402

from schemas.table import WebhookOutbox  # noqa: E402

ATTEMPTS_TABLE = "ticket_attempts"
_OUTBOX = WebhookOutbox.__table__  # type: ignore[attr-defined]
_FINAL = C.status.in_(list(FINAL_STATUSES))


def _old_final(completed_before: datetime) -> Any:
    return and_(_FINAL, C.completed_at < completed_before)


def _delete_dependents(conn: Connection, keys: list[str]) -> dict[str, int]:
    """Delete the outbox entries and attempt rows of `keys`; how many of each went. The
    attempts table may not exist (yet): looked up, not assumed."""
    if not keys:
        return {"outbox": 0, "attempts": 0}
    outbox = conn.execute(_OUTBOX.delete().where(_OUTBOX.c.idempotency_key.in_(keys))).rowcount
    attempts = 0
    if sa_inspect(conn).has_table(ATTEMPTS_TABLE):
        stmt = sa_text(f"DELETE FROM {ATTEMPTS_TABLE} WHERE idempotency_key IN :keys").bindparams(
            bindparam("keys", expanding=True)
        )
        attempts = conn.execute(stmt, {"keys": keys}).rowcount
    return {"outbox": int(outbox or 0), "attempts": int(attempts or 0)}


def _locked_keys(conn: Connection, cond: Any, limit: int) -> list[str]:
    # FOR UPDATE SKIP LOCKED on PostgreSQL: a row a worker or a re-issuance holds right now is
    # left for the next batch, and nothing changes the selected rows before we do. SQLite
    # ignores it (its write transaction already excludes every other writer).
    stmt = select(C.idempotency_key).where(cond).order_by(C.id).limit(limit)
    return list(conn.execute(stmt.with_for_update(skip_locked=True)).scalars())


def drop_old_payloads(engine: Engine, completed_before: datetime, limit: int) -> int:
    """Set the payload of up to `limit` rows final before `completed_before` to SQL NULL;
    how many changed. payload_sha256 stays (a resend is still recognised as one); such a row
    can no longer be re-driven, having nothing to send."""
    with writing(engine) as conn:
        cond = and_(_old_final(completed_before), C.payload.is_not(None))
        keys = _locked_keys(conn, cond, limit)
        if not keys:
            return 0
        return int(
            conn.execute(update(T).where(C.idempotency_key.in_(keys)).values(payload=sa_null())).rowcount
        )


def delete_old_rows(engine: Engine, completed_before: datetime, limit: int) -> dict[str, int]:
    """Delete up to `limit` rows final before `completed_before`, with their dependents."""
    with writing(engine) as conn:
        keys = _locked_keys(conn, _old_final(completed_before), limit)
        gone = _delete_dependents(conn, keys)
        rows = conn.execute(T.delete().where(C.idempotency_key.in_(keys))).rowcount if keys else 0
    return {"rows": int(rows or 0), **gone}


def rows_for_message(
    engine: Engine, message_id: str, provider: str | None = None, account: str | None = None
) -> list[TicketIssuance]:
    """Every row (all generations, every provider and account unless narrowed) of a message."""
    conds = [C.message_id == message_id]
    if provider:
        conds.append(C.provider == provider)
    if account:
        conds.append(C.account == account)
    with engine.connect() as conn:
        rows = conn.execute(select(T).where(and_(*conds)).order_by(C.id)).mappings()
        return [as_row(r) for r in rows]


def erase_rows(engine: Engine, keys: list[str], delete_rows: bool) -> dict[str, int]:
    """A person's deletion request, for final rows only (a row still being issued needs its
    payload). Either delete the rows, or keep each as a tombstone without personal data:
    status, key, message_id, payload_sha256 and provider_reference stay, so a resend of the
    message is still answered from the row instead of issuing a second ticket."""
    if not keys:
        return {"rows": 0, "outbox": 0, "attempts": 0}
    with writing(engine) as conn:
        gone = _delete_dependents(conn, keys)
        where_ = and_(C.idempotency_key.in_(keys), _FINAL)
        if delete_rows:
            rows = conn.execute(T.delete().where(where_)).rowcount
        else:
            rows = conn.execute(
                update(T)
                .where(where_)
                .values(payload=sa_null(), tickets=[], qr_codes=sa_null(), message_metadata={})
            ).rowcount
    return {"rows": int(rows or 0), **gone}


def count_without_payload(engine: Engine, f: RowFilter) -> int:
    """Rows of a re-issuance selection whose payload is gone (they cannot be re-driven)."""
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(T).where(_filter_cond(f), C.payload.is_(None))
        return int(conn.execute(stmt).scalar_one())


def restore_payload(engine: Engine, key: str, payload: dict[str, Any], payload_sha256: str) -> bool:
    """Give a row whose payload was dropped its payload back, from a re-imported envelope of
    the same message: only when the row has none and the hashes agree (the same payload)."""
    with writing(engine) as conn:
        changed = conn.execute(
            update(T)
            .where(C.idempotency_key == key, C.payload.is_(None), C.payload_sha256 == payload_sha256)
            .values(payload=payload)
        ).rowcount
    return bool(changed)


@lru_cache(maxsize=256)
def _run_started_at(engine: Engine, run_id: str) -> datetime | None:
    with engine.connect() as conn:
        value = conn.execute(select(RUNS.c.created_at).where(RUNS.c.run_id == run_id)).scalar()
    return as_utc(value)


def drive_started_at(engine: Engine, row: TicketIssuance) -> datetime | None:
    """Since when this key has been driven, for the give-up time limit: its acceptance, or the
    later start of a bulk re-issuance run that re-drove it, or of an operator's re-drive
    (ticketrelay retry). A re-drive of an old booking so gets the full time again."""
    starts = [as_utc(row.created_at), as_utc(getattr(row, "redriven_at", None))]
    if row.reissue_run is not None:
        starts.append(_run_started_at(engine, row.reissue_run))
    known = [s for s in starts if s is not None]
    return max(known) if known else None


def prune_attempts(engine: Engine, retention_s: float, limit: int = 1000) -> int:
    """Delete at most `limit` attempt history rows recorded more than `retention_s` ago (0:
    none by age), and those whose issuance is gone (PostgreSQL deletes them with it, by the
    foreign key; SQLite enforces foreign keys only when asked to). How many went."""
    orphans = ~select(C.id).where(C.idempotency_key == AC.idempotency_key).exists()
    cond = orphans
    if retention_s > 0:
        cond = or_(AC.recorded_at < utcnow() - timedelta(seconds=retention_s), orphans)
    with writing(engine) as conn:
        ids = list(conn.execute(select(AC.id).where(cond).order_by(AC.id).limit(limit)).scalars())
        if not ids:
            return 0
        conn.execute(delete(AT).where(AC.id.in_(ids)))
    return len(ids)


# --- operators: inspect, settle and re-drive one booking (worker/ops/bookings.py) ------------


class Refused(Exception):
    """An operator's change that the row's state does not allow; the message says why."""


def reference_elsewhere(engine: Engine, provider: str, account: str, reference: str, key: str) -> bool:
    """Has a row other than `key` recorded this provider reference (an order, a payment) of
    this account? A lookup's match that is already another booking's is not this one's."""
    with engine.connect() as conn:
        found = conn.execute(
            select(C.id)
            .where(
                C.provider == provider,
                C.account == account,
                C.provider_reference == reference,
                C.idempotency_key != key,
            )
            .limit(1)
        ).first()
    return found is not None


def answered_5xx(engine: Engine, key: str) -> bool:
    """Did any call of this key get a 5xx answer (its create or a lookup)? Read from the attempt
    history, so it holds through later attempts that ended otherwise (a lookup timing out)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(AC.id).where(AC.idempotency_key == key, AC.http_status >= 500).limit(1)
        ).first()
    return found is not None


def attempts_of(engine: Engine, key: str) -> list[dict[str, Any]]:
    """The attempt history of a key, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(AT).where(AC.idempotency_key == key).order_by(AC.id)).mappings()
        return [dict(r) for r in rows]


def find_by_message_id(engine: Engine, message_id: str) -> list[TicketIssuance]:
    """Every row of a producer's message_id (any provider, account and generation)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(T).where(C.message_id == message_id).order_by(C.provider, C.account, C.generation)
        ).mappings()
        return [as_row(r) for r in rows]


def list_bookings(
    engine: Engine,
    status: str,
    provider: str | None = None,
    account: str | None = None,
    older_than_s: float | None = None,
    limit: int = 100,
) -> list[TicketIssuance]:
    """Rows in `status`, oldest first. `older_than_s`: in that status for at least that long
    (since completed_at for a final status, since updated_at for an active one)."""
    conds = [C.status == status]
    if provider is not None:
        conds.append(C.provider == provider)
    if account is not None:
        conds.append(C.account == account)
    since = C.completed_at if status in FINAL_STATUSES else C.updated_at
    if older_than_s is not None:
        conds.append(since <= utcnow() - timedelta(seconds=older_than_s))
    with engine.connect() as conn:
        rows = conn.execute(select(T).where(and_(*conds)).order_by(since, C.id).limit(limit)).mappings()
        return [as_row(r) for r in rows]


def _operator_attempt(key: str, attempts: int, by: str, outcome: str, now: datetime, **more: Any) -> Any:
    return insert(AT).values(
        idempotency_key=key,
        attempt=attempts,
        started_at=now,
        recorded_at=now,
        duration_ms=None,
        worker=f"operator:{by}"[:128],
        outcome=outcome,
        **{"http_status": None, "error_type": None, "message": None, "in_doubt": False, **more},
    )


def _must_get(conn: Any, key: str) -> TicketIssuance:
    row = conn.execute(select(T).where(C.idempotency_key == key)).mappings().first()
    if row is None:
        raise LookupError(key)
    return as_row(row)


RESOLVABLE = {
    "issued": (Status.NEEDS_REVIEW.value, Status.FAILED.value),
    "failed": (Status.NEEDS_REVIEW.value,),
}


def resolve(
    engine: Engine,
    key: str,
    *,
    issued: bool,
    reason: str,
    by: str,
    reference: str | None = None,
    tickets: list[Ticket] | None = None,
) -> TicketIssuance:
    """An operator settles a booking: `issued` (what they found at the provider: its reference
    and tickets) or `failed` (nothing exists there). Only a needs_review row (or a failed one,
    as issued: the tickets turned up after all). The row records who and why, the attempt
    history gets an entry, the revision goes up and the result is to be published again
    (callback_sent_at cleared). LookupError: no such key; Refused: not in a settleable state."""
    target = Status.ISSUED if issued else Status.FAILED
    allowed = RESOLVABLE[target.value]
    now = utcnow()
    note = reason[:1024]
    values: dict[str, Any] = {
        "status": target.value,
        "in_doubt": False,
        "resolved_by": by[:64],
        "resolved_at": now,
        "resolution": note,
        "completed_at": now,
        "updated_at": now,
        "callback_sent_at": None,
        "next_attempt_at": None,
        "lease_owner": None,
        "lease_until": None,
        "revision": C.revision + 1,
    }
    if issued:
        values.update(_error_values(None))
        values["provider_reference"] = reference
        if tickets is not None:
            values["tickets"] = [t.model_dump() for t in tickets]
    else:
        values.update(
            _error_values(
                ResultError(type="resolved_failed", message=f"settled by an operator: {note}"[:1024])
            )
        )
    with writing(engine) as conn:
        row = _must_get(conn, key)
        if row.status not in allowed:
            states = " or ".join(allowed)
            raise Refused(f"{key} is {row.status}; --{target.value} settles only a booking that is {states}")
        done = _operator_step(
            conn,
            update(T).where(C.idempotency_key == key, C.status == row.status).values(values),
            _operator_attempt(
                key,
                row.attempts,
                by,
                f"resolved_{target.value}",
                now,
                message=note,
                error_type=None if issued else "resolved_failed",
                in_doubt=bool(row.in_doubt),
            ),
        )
    return as_row(done)


def _operator_step(conn: Connection, change: Any, note: Any) -> Any:
    """An operator's compare-and-set on one row and its attempt-history entry, in one
    transaction; Refused when the row moved between the read and the write."""
    done = conn.execute(change.returning(*T.c)).mappings().first()
    if done is None:  # pragma: no cover - moved between the read and the write
        raise Refused("the booking changed meanwhile; look again")
    conn.execute(note)
    return done


REDRIVABLE_BY_OPERATOR = (
    Status.NEEDS_REVIEW.value,
    Status.FAILED.value,
    Status.RETRYING.value,
    Status.QUEUED.value,
)


def redrive(engine: Engine, key: str, *, by: str, reason: str = "") -> TicketIssuance:
    """An operator's re-drive of one key, now, with the same key: queued, a fresh attempt budget
    and time limit, `in_doubt` kept, so the next call reconciles with the provider first
    exactly as after any attempt in doubt (never a blind second creation). The attempt history
    gets an entry. LookupError: no such key; Refused: issued, rejected, or being called now."""
    now = utcnow()
    with writing(engine) as conn:
        row = _must_get(conn, key)
        if row.status not in REDRIVABLE_BY_OPERATOR:
            why = {
                Status.ISSUED.value: "it is issued; nothing to retry",
                Status.REJECTED.value: "it was rejected at intake, never sent; fix and publish it again",
                Status.IN_PROGRESS.value: "a worker is calling the provider for it right now",
            }.get(row.status, f"it is {row.status}")
            raise Refused(f"{key}: not retried: {why}")
        done = _operator_step(
            conn,
            update(T)
            .where(C.idempotency_key == key, C.status == row.status, C.attempts == row.attempts)
            .values(
                status=Status.QUEUED.value,
                attempts_base=C.attempts,
                redriven_at=now,
                next_attempt_at=None,
                completed_at=None,
                callback_sent_at=None,
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            ),
            _operator_attempt(
                key,
                row.attempts,
                by,
                "redrive",
                now,
                message=reason[:1024] or None,
                in_doubt=bool(row.in_doubt),
            ),
        )
    return as_row(done)


# =============================================================================================
# Cancellations (1.1): a cancel has its own row (operation `cancel`, `cancels` = the booking's
# message_id). The booking's `cancel_key` names the one cancel that may call the provider's
# void; every other cancel of it waits for that one and ends with its outcome.
# =============================================================================================


def find_booking(engine: Engine, provider: str, account: str, message_id: str) -> TicketIssuance | None:
    """The row of `message_id` (its latest generation) for this provider and account, or None."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(T)
                .where(C.provider == provider, C.account == account, C.message_id == message_id)
                .order_by(C.generation.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
    return as_row(row) if row is not None else None


def take_cancel(engine: Engine, booking_key: str, cancel_key: str) -> str | None:
    """Make `cancel_key` the booking's one voiding cancel, unless another took it first.
    Returns the cancel key the booking holds now (ours, another's), None if no row."""
    with writing(engine) as conn:
        conn.execute(
            update(T)
            .where(C.idempotency_key == booking_key, C.cancel_key.is_(None))
            .values(cancel_key=cancel_key, updated_at=utcnow())
        )
        return cast(
            "str | None",
            conn.execute(select(C.cancel_key).where(C.idempotency_key == booking_key)).scalar_one_or_none(),
        )


def mark_booking_cancelled(engine: Engine, booking_key: str, cancel_key: str) -> TicketIssuance | None:
    """The booking voided at the provider: `issued` -> `cancelled`, its result corrected (a
    raised revision, to be published again). Only by its voiding cancel; None when the booking
    is not `issued` any more (already marked: a repeated step)."""
    now = utcnow()
    with writing(engine) as conn:
        row = (
            conn.execute(
                update(T)
                .where(
                    C.idempotency_key == booking_key,
                    C.cancel_key == cancel_key,
                    C.status == Status.ISSUED.value,
                )
                .values(
                    status=Status.CANCELLED.value,
                    revision=C.revision + 1,
                    callback_sent_at=None,
                    completed_at=now,
                    updated_at=now,
                )
                .returning(*T.c)
            )
            .mappings()
            .first()
        )
    return as_row(row) if row is not None else None


def cancel_wait(engine: Engine, key: str, delay_s: float) -> bool:
    """A cancel waiting for its booking (still in flight, or not arrived): `retrying` until
    `next_attempt_at`, no provider call counted. The sweeper re-drives it if the countdown
    message is lost. False when the row is final or leased by a worker."""
    now = utcnow()
    with writing(engine) as conn:
        changed = conn.execute(
            update(T)
            .where(
                C.idempotency_key == key,
                C.status.in_([Status.QUEUED.value, Status.RETRYING.value]),
            )
            .values(
                status=Status.RETRYING.value,
                next_attempt_at=now + timedelta(seconds=delay_s),
                updated_at=now,
            )
        ).rowcount
    return bool(changed)


def finish_without_call(
    engine: Engine,
    key: str,
    status: Status,
    error: ResultError | None,
    *,
    tickets: list[dict[str, Any]] | None = None,
    provider_reference: str | None = None,
    in_doubt: bool = False,
) -> TicketIssuance | None:
    """A cancel settled without a provider call (its booking failed, needs review, or another
    cancel of it decided), or its final status after one. None when it was already final."""
    values: dict[str, Any] = {"status": status.value, "in_doubt": in_doubt, **_error_values(error)}
    if tickets is not None:
        values["tickets"] = tickets
    if provider_reference is not None:
        values["provider_reference"] = provider_reference
    return _finish(engine, key, None, values)


def record_cancel_final(
    engine: Engine,
    key: str,
    token: str,
    status: Status,
    error: ResultError | None,
    in_doubt: bool,
    tickets: list[dict[str, Any]] | None = None,
    provider_reference: str | None = None,
    note: AttemptNote | None = None,
) -> TicketIssuance | None:
    """The final status of a cancel after its own provider call (lease holder only); `note`:
    that call, for the attempt history."""
    values: dict[str, Any] = {"status": status.value, "in_doubt": in_doubt, **_error_values(error)}
    if tickets is not None:
        values["tickets"] = tickets
    if provider_reference is not None:
        values["provider_reference"] = provider_reference
    return _finish(engine, key, token, values, note)
