"""Parking a row during an outage, a failed probe kept off the budget, and the give-up rule,
against real SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from schemas.result import ResultError
from schemas.statuses import Status
from schemas.table import TicketIssuance
from tests.helpers import accept_booking
from worker import ledger
from worker.outage import CIRCUIT_OPEN, circuit_open_error, give_up_reason, park, uncharge_attempt

WHY = circuit_open_error("eguma", "default", 30)
ERR = ResultError(type="provider_unavailable", message="e-guma is unavailable (HTTP 503)", retryable=True)


def read(engine: Engine, key: str) -> TicketIssuance:
    row = ledger.get(engine, key)
    assert row is not None
    return row


def fail_once(engine: Engine, key: str) -> TicketIssuance:
    """One claimed call that ended in a retry, as the issue path records it."""
    assert ledger.claim(engine, read(engine, key), "tok", lease_s=30)
    assert ledger.record_retry(engine, key, "tok", ERR, in_doubt=False, delay_s=1) is not None
    return read(engine, key)


def test_a_queued_row_is_parked_in_retrying_without_an_attempt(engine: Engine) -> None:
    key = accept_booking(engine, "eguma", "p-1")
    before = ledger.utcnow()
    assert park(engine, read(engine, key), 30, WHY)
    row = read(engine, key)
    assert row.status == Status.RETRYING and row.attempts == 0 and row.attempts_base == 0
    due = ledger.as_utc(row.next_attempt_at)
    assert due is not None and before + timedelta(seconds=29) < due < ledger.utcnow() + timedelta(seconds=31)
    assert row.error_type == CIRCUIT_OPEN and "no attempt spent" in (row.error_message or "")
    assert row.lease_owner is None and row.completed_at is None
    # Not claimable before it is due, and the sweeper leaves it alone until then.
    assert ledger.claimable(row, ledger.utcnow()) == "not_due"
    assert key not in ledger.stale_keys(engine, stale_after_s=60, limit=10)
    assert ledger.claimable(row, ledger.utcnow() + timedelta(seconds=31)) is None


def test_parking_keeps_the_last_real_error(engine: Engine) -> None:
    key = accept_booking(engine, "eguma", "p-2")
    row = fail_once(engine, key)
    assert park(engine, row, 60, WHY)
    parked = read(engine, key)
    assert parked.attempts == 1 and parked.status == Status.RETRYING
    assert parked.error_type == "provider_unavailable" and parked.error_message == ERR.message
    due = ledger.as_utc(parked.next_attempt_at)
    assert due is not None and due > ledger.utcnow() + timedelta(seconds=55)


def test_a_row_claimed_meanwhile_or_final_is_not_parked(engine: Engine) -> None:
    key = accept_booking(engine, "eguma", "p-3")
    stale = read(engine, key)
    assert ledger.claim(engine, stale, "other-worker", lease_s=30)
    assert not park(engine, stale, 30, WHY)  # compare-and-set on what we read
    row = read(engine, key)
    assert row.status == Status.IN_PROGRESS and row.lease_owner == "other-worker"
    assert not park(engine, row, 30, WHY)  # in_progress is never parked
    ledger.record_final_error(engine, key, "other-worker", Status.FAILED, ERR, in_doubt=False)
    final = read(engine, key)
    assert not park(engine, final, 30, WHY)
    assert read(engine, key).status == Status.FAILED


def test_a_failed_probe_is_counted_but_not_charged(engine: Engine) -> None:
    key = accept_booking(engine, "eguma", "p-4")
    row = fail_once(engine, key)
    assert row.attempts == 1 and row.attempts_base == 0
    assert not uncharge_attempt(engine, key, attempts=2)  # not the attempt just recorded
    assert uncharge_attempt(engine, key, attempts=1)
    row = read(engine, key)
    assert row.attempts == 1 and row.attempts_base == 1  # a call made, none charged
    assert not uncharge_attempt(engine, key, attempts=1)  # once only
    assert read(engine, key).attempts_base == 1
    # The next claim and retry are charged as usual.
    row = fail_once(engine, key)
    assert row.attempts - row.attempts_base == 1


def test_give_up_by_attempts_or_by_time(engine: Engine) -> None:
    key = accept_booking(engine, "eguma", "p-5")
    row = read(engine, key)
    created = ledger.as_utc(row.created_at)
    assert created is not None
    day = 24 * 3600.0
    assert give_up_reason(row, max_attempts=8, give_up_after_s=day) is None
    assert give_up_reason(row, 8, day, now=created + timedelta(hours=6)) is None
    late = give_up_reason(row, 8, day, now=created + timedelta(hours=24, seconds=1))
    assert late is not None and "24 h" in late and "0 of 8" in late
    assert give_up_reason(row, 8, None, now=created + timedelta(days=30)) is None
    # A re-drive counts from its own start.
    restarted = created + timedelta(hours=20)
    assert give_up_reason(row, 8, day, now=created + timedelta(hours=25), started_at=restarted) is None
    for _ in range(2):
        row = fail_once(engine, key)
    spent = give_up_reason(row, max_attempts=2, give_up_after_s=day)
    assert spent == "gave up after 2 of 2 attempts"
    uncharge_attempt(engine, key, row.attempts)
    assert give_up_reason(read(engine, key), max_attempts=2, give_up_after_s=day) is None
