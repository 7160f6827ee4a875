"""The webhook outbox: one row per (result revision, URL), kept until the receiver answers
2xx, or until the retries run out (dead_at; an operator can replay it).

    enqueue -> due -> claimed (lease) -> delivered
                ^          |
                +- retry --+--> dead -> (replay) -> due

`enqueue` takes the caller's connection: it runs in the transaction that marks the result
published, so a result is never marked published without its callback queued. Everything else
takes the engine and is one statement that can be repeated safely, like worker/ledger.py.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, and_, bindparam, delete, func, or_, select, update

from schemas.result import ResultMessage
from schemas.table import WebhookOutbox
from worker.backoff import next_delay
from worker.db import insert_new, writing
from worker.ledger import as_utc, utcnow
from worker.results import encode_result
from worker.settings import AccountConfig
from worker.webhooks.config import RetryPolicy, callback_url

T = WebhookOutbox.__table__  # type: ignore[attr-defined]
C = T.c

# The namespace of webhook ids: uuid5 of "{idempotency_key}/{revision}" in it, so the id of a
# result revision is the same on every retry, every replay and every worker.
WEBHOOK_ID_NAMESPACE = uuid.UUID("5b0c7a5e-3f2d-5c1e-9a61-7e3b2f8d4c10")
MAX_ERROR = 300

State = Literal["pending", "dead", "delivered"]
_TIMES = ("next_attempt_at", "lease_until", "delivered_at", "created_at", "replayed_at", "dead_at")


@dataclass(frozen=True)
class Entry:
    id: int
    idempotency_key: str
    revision: int
    provider: str
    account: str
    url: str
    body: bytes
    webhook_id: str
    attempts: int
    next_attempt_at: datetime
    lease_owner: str | None
    lease_until: datetime | None
    delivered_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    replayed_at: datetime | None
    dead_at: datetime | None

    @classmethod
    def from_mapping(cls, m: Any) -> Entry:
        values = {f.name: m[f.name] for f in fields(cls)}
        for name in _TIMES:
            values[name] = as_utc(values[name])
        values["body"] = bytes(values["body"])  # PostgreSQL gives a memoryview
        return cls(**values)

    @property
    def state(self) -> State:
        if self.delivered_at is not None:
            return "delivered"
        if self.dead_at is not None:
            return "dead"
        return "pending"

    def __repr__(self) -> str:  # no body, no URL: they hold personal data and tokens
        return f"<webhook {self.id} {self.idempotency_key} r{self.revision} {self.state}>"


def webhook_id_for(idempotency_key: str, revision: int) -> str:
    return "msg_" + uuid.uuid5(WEBHOOK_ID_NAMESPACE, f"{idempotency_key}/{revision}").hex


def body_for(result: ResultMessage) -> bytes:
    """The exact bytes signed and sent: the result message, as on the result stream."""
    return encode_result(result).encode()


def _insert_stmt(dialect: str, values: dict[str, Any]) -> Any:
    return insert_new(dialect, T, values, ["idempotency_key", "revision", "url"])


def enqueue(conn: Connection, result: ResultMessage, url: str, now: datetime | None = None) -> bool:
    """Queue `result` for `url` in the caller's transaction. True when this call queued it; the
    same result revision for the same URL again (a republish, a sweep) queues nothing."""
    now = now or utcnow()
    values = {
        "idempotency_key": result.idempotency_key,
        "revision": result.revision,
        "provider": result.provider,
        "account": result.account,
        "url": url,
        "body": body_for(result),
        "webhook_id": webhook_id_for(result.idempotency_key, result.revision),
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    return conn.execute(_insert_stmt(conn.dialect.name, values)).first() is not None


def enqueue_results(
    conn: Connection,
    accounts: dict[tuple[str, str], AccountConfig],
    results: Iterable[ResultMessage],
    now: datetime | None = None,
) -> int:
    """enqueue() for every result whose account has a callback_url; how many were queued."""
    queued = 0
    for result in results:
        url = callback_url(accounts, result.provider, result.account)
        if url is not None and enqueue(conn, result, url, now):
            queued += 1
    return queued


def _due(now: Any) -> Any:
    return and_(
        C.delivered_at.is_(None),
        C.dead_at.is_(None),
        C.next_attempt_at <= now,
        or_(C.lease_until.is_(None), C.lease_until <= now),
    )


_NOW = bindparam("b_now", type_=C.next_attempt_at.type)
# Oldest due first. FOR UPDATE SKIP LOCKED on PostgreSQL: a second deliverer skips the rows
# the first is claiming instead of waiting for them (SQLite has one writer and ignores it).
# In a CTE, because PostgreSQL runs a CTE with a locking clause exactly once, where a plain
# `IN (SELECT ... LIMIT n)` may be run again and claim more than n (seen in the tests). The
# outer WHERE repeats the conditions, so a row claimed in between is never taken twice.
_DUE = (
    select(C.id)
    .where(_due(_NOW))
    .order_by(C.next_attempt_at, C.id)
    .limit(bindparam("b_limit"))
    .with_for_update(skip_locked=True)
    .cte("due")
)
_CLAIM = (
    update(T)
    .where(C.id.in_(select(_DUE.c.id)), _due(_NOW))
    .values(lease_owner=bindparam("b_token"), lease_until=bindparam("b_lease_until"))
    .returning(*T.c)
)


_HAS_DUE = select(C.id).where(_due(_NOW)).limit(1)


def has_due(engine: Engine, now: datetime | None = None) -> bool:
    """A read, no lock: the deliverer runs every few seconds, mostly to find nothing."""
    with engine.connect() as conn:
        return conn.execute(_HAS_DUE, {"b_now": now or utcnow()}).first() is not None


def claim_due(
    engine: Engine, limit: int, lease_s: float, now: datetime | None = None, token: str | None = None
) -> list[Entry]:
    """Take up to `limit` due entries under a lease of `lease_s`: until it ends (or the holder
    records an answer), no other deliverer takes them. A deliverer that dies mid-send leaves
    its entries to be taken again when the lease ends."""
    now = now or utcnow()
    params = {
        "b_now": now,
        "b_limit": limit,
        "b_token": token or uuid.uuid4().hex,
        "b_lease_until": now + timedelta(seconds=lease_s),
    }
    with writing(engine) as conn:
        rows = conn.execute(_CLAIM, params).mappings().all()
    return sorted((Entry.from_mapping(r) for r in rows), key=lambda e: (e.next_attempt_at, e.id))


def _held(entry: Entry) -> Any:
    return and_(C.id == entry.id, C.lease_owner == entry.lease_owner, C.delivered_at.is_(None))


def _update(engine: Engine, where: Any, values: dict[str, Any]) -> bool:
    with writing(engine) as conn:
        return conn.execute(update(T).where(where).values(**values)).rowcount == 1


def scrub(text: str) -> str:
    return " ".join(text.split())[:MAX_ERROR]


def mark_delivered(engine: Engine, entry: Entry, status: int, now: datetime | None = None) -> bool:
    """The receiver answered 2xx. Recorded even by a deliverer whose lease ran out: the answer
    is a fact; only the first one counts."""
    return _update(
        engine,
        and_(C.id == entry.id, C.delivered_at.is_(None)),
        {
            "delivered_at": now or utcnow(),
            "attempts": C.attempts + 1,
            "last_status": status,
            "last_error": None,
            "lease_owner": None,
            "lease_until": None,
        },
    )


def mark_dead(
    engine: Engine, entry: Entry, status: int | None, error: str, now: datetime | None = None
) -> bool:
    """No more attempts (the receiver answered 410 Gone). An operator can replay it."""
    return _update(
        engine,
        _held(entry),
        {
            "dead_at": now or utcnow(),
            "attempts": C.attempts + 1,
            "last_status": status,
            "last_error": scrub(error),
            "lease_owner": None,
            "lease_until": None,
        },
    )


def mark_retry(
    engine: Engine,
    entry: Entry,
    policy: RetryPolicy,
    status: int | None,
    error: str,
    retry_after_s: float | None = None,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Literal["retry", "dead"] | None:
    """An attempt that was not acknowledged: due again after an exponential backoff with full
    jitter (a Retry-After is a floor), or dead once `max_attempts` attempts were made or
    `max_age_s` passed since it was queued (or replayed). None: the lease was lost, nothing
    recorded."""
    now = now or utcnow()
    attempts = entry.attempts + 1
    deadline = (entry.replayed_at or entry.created_at) + timedelta(seconds=policy.max_age_s)
    values: dict[str, Any] = {
        "attempts": C.attempts + 1,
        "last_status": status,
        "last_error": scrub(error),
        "lease_owner": None,
        "lease_until": None,
    }
    if attempts >= policy.max_attempts or now >= deadline:
        values["dead_at"] = now
        outcome: Literal["retry", "dead"] = "dead"
    else:
        delay = next_delay(attempts, policy.base_s, policy.cap_s, retry_after_s, rng)
        # The last attempt lands on the deadline rather than past it.
        values["next_attempt_at"] = min(now + timedelta(seconds=delay), deadline)
        outcome = "retry"
    return outcome if _update(engine, _held(entry), values) else None


def defer(engine: Engine, entry: Entry, until: datetime) -> bool:
    """Give a claimed entry back unsent, due at `until`, with no attempt counted (its host just
    timed out on another entry: no point in waiting on it again in this run)."""
    return _update(engine, _held(entry), {"next_attempt_at": until, "lease_owner": None, "lease_until": None})


def release(engine: Engine, entry: Entry) -> bool:
    """Give a claimed entry back unsent, due as it was (the run ran out of lease time)."""
    return _update(engine, _held(entry), {"lease_owner": None, "lease_until": None})


def _selection(
    ids: list[int] | None, key: str | None, states: Iterable[State], since: datetime | None = None
) -> Any:
    conds = []
    if ids:
        conds.append(C.id.in_(ids))
    if key:
        conds.append(C.idempotency_key == key)
    if since is not None:
        conds.append(C.created_at >= since)
    by_state = {
        "pending": and_(C.delivered_at.is_(None), C.dead_at.is_(None)),
        "dead": and_(C.delivered_at.is_(None), C.dead_at.is_not(None)),
        "delivered": C.delivered_at.is_not(None),
    }
    conds.append(or_(*(by_state[s] for s in states)))
    return and_(*conds)


def replay(
    engine: Engine,
    ids: list[int] | None = None,
    key: str | None = None,
    states: Iterable[State] = ("dead",),
    since: datetime | None = None,
    now: datetime | None = None,
) -> int:
    """Make the selected entries due now, with a fresh attempt budget and give-up window. The
    body and the webhook id stay: a receiver that got it before sees the same id again and can
    drop it. How many entries were replayed."""
    states = tuple(states)
    if not ids and not key and since is None and "dead" not in states:
        raise ValueError("replay needs ids, a key, a since, or the dead entries")
    now = now or utcnow()
    with writing(engine) as conn:
        return int(
            conn.execute(
                update(T)
                .where(_selection(ids, key, states, since))
                .values(
                    dead_at=None,
                    delivered_at=None,
                    attempts=0,
                    next_attempt_at=now,
                    replayed_at=now,
                    lease_owner=None,
                    lease_until=None,
                )
            ).rowcount
        )


def purge(engine: Engine, delivered_before: datetime | None, dead_before: datetime | None) -> int:
    """Delete delivered entries older than `delivered_before` and dead ones older than
    `dead_before` (None: keep those). Pending entries are never purged."""
    conds = []
    if delivered_before is not None:
        conds.append(and_(C.delivered_at.is_not(None), C.delivered_at < delivered_before))
    if dead_before is not None:
        conds.append(and_(C.delivered_at.is_(None), C.dead_at.is_not(None), C.dead_at < dead_before))
    if not conds:
        return 0
    with writing(engine) as conn:
        return int(conn.execute(delete(T).where(or_(*conds))).rowcount)


def entries(
    engine: Engine,
    states: Iterable[State] = ("pending", "dead"),
    key: str | None = None,
    ids: list[int] | None = None,
    limit: int = 100,
) -> list[Entry]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(T).where(_selection(ids, key, tuple(states))).order_by(C.id.desc()).limit(limit)
        ).mappings()
        return [Entry.from_mapping(r) for r in rows]


def counts(engine: Engine) -> dict[str, int]:
    """Entries by state, and how long the oldest pending one has waited (s), for `status`."""
    pending_cond = and_(C.delivered_at.is_(None), C.dead_at.is_(None))
    state = select(
        func.count().filter(pending_cond),
        func.count().filter(and_(C.delivered_at.is_(None), C.dead_at.is_not(None))),
        func.count().filter(C.delivered_at.is_not(None)),
        func.min(C.created_at).filter(pending_cond),
    )
    with engine.connect() as conn:
        pending, dead, delivered, oldest = conn.execute(state).one()
    oldest = as_utc(oldest)
    return {
        "pending": int(pending or 0),
        "dead": int(dead or 0),
        "delivered": int(delivered or 0),
        "oldest_pending_s": int((utcnow() - oldest).total_seconds()) if oldest is not None else 0,
    }
