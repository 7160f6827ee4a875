"""What the issue path does to a row during a provider outage (docs/outages.md): park it without
spending an attempt, keep a failed probe's attempt off the booking's budget, and give up by
time as well as by attempts.

Kept apart from worker/ledger.py so that it can be reviewed and tested on its own; each is one
compare-and-set statement in the ledger's style and may move into the ledger as it is.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, func, update

from schemas.result import ResultError
from schemas.statuses import Status
from schemas.table import TicketIssuance
from worker.db import writing
from worker.ledger import C, T, as_utc, utcnow

# What a parked row shows as its error while it has no real one yet (a booking that arrived
# during the outage): operators see why it waits. A real last error is never overwritten.
CIRCUIT_OPEN = "circuit_open"

# The default time limit: a booking still unfinished this long after it was accepted is given
# up (ends `failed`, or `needs_review` when a call may have created tickets), whatever its
# attempts. Far above an ordinary outage (minutes to hours), below "nobody wants it any more".
GIVE_UP_AFTER_S = 24 * 3600.0


def circuit_open_error(provider: str, account: str, wait_s: float) -> ResultError:
    return ResultError(
        type=CIRCUIT_OPEN,
        message=(
            f"{provider} account {account} is failing; waiting {wait_s:.0f} s before the next "
            "try (no attempt spent)"
        ),
        retryable=True,
    )


def park(engine: Engine, row: TicketIssuance, wait_s: float, why: ResultError) -> bool:
    """Put a queued or retrying row (as read) in `retrying`, due in `wait_s`, without counting
    an attempt. Compare-and-set on status and attempts, like the claim: a row another worker
    claimed meanwhile is left alone (False). `why` becomes the row's error only where it has
    none, so the last provider error stays what a give-up reports."""
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
        return conn.execute(stmt).rowcount == 1


def uncharge_attempt(engine: Engine, key: str, attempts: int) -> bool:
    """A failed probe's call stays counted in `attempts` (provider calls made, by contract) but
    not against the booking's budget: the failure was the provider's, not this booking's, and a
    6-hour outage is 360 probes at one a minute. Done right after record_retry recorded the
    attempt numbered `attempts` (a crash in between only charges it: the safe side)."""
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
        return conn.execute(stmt).rowcount == 1


def give_up_reason(
    row: TicketIssuance,
    max_attempts: int,
    give_up_after_s: float | None,
    now: datetime | None = None,
    started_at: datetime | None = None,
) -> str | None:
    """Why this booking must stop now, or None: its attempt budget is spent, or it has been
    unfinished for longer than the account's `give_up_after_s` (None: no time limit), counted
    from `started_at` (default: when it was accepted; a re-issuance passes its own start)."""
    charged = row.attempts - row.attempts_base
    if charged >= max_attempts:
        return f"gave up after {charged} of {max_attempts} attempts"
    if give_up_after_s is None:
        return None
    start = as_utc(started_at) or as_utc(row.created_at)
    current = now or utcnow()
    if start is not None and (current - start).total_seconds() >= give_up_after_s:
        hours = give_up_after_s / 3600
        return f"gave up after {hours:g} h unfinished ({charged} of {max_attempts} attempts used)"
    return None
