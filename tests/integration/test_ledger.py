"""The ticket_issuances state machine against real SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from sqlalchemy import Engine, update

from schemas.keys import idempotency_key
from schemas.result import ResultError, Ticket
from schemas.statuses import Status
from worker import ledger


def booking(mid: str = "m-1", provider: str = "eguma") -> ledger.NewBooking:
    return ledger.NewBooking(
        idempotency_key=idempotency_key(provider, "default", mid),
        message_id=mid,
        provider=provider,
        account="default",
        generation=0,
        payload={"x": 1},
        payload_sha256="h" * 64,
        reply_to="ticketrelay:results",
        metadata={"a": "b"},
    )


def test_create_is_idempotent_on_the_key(engine: Engine) -> None:
    b = booking()
    assert ledger.create_queued(engine, b) is True
    assert ledger.create_queued(engine, b) is False
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None and row.status == Status.QUEUED and row.attempts == 0
    assert row.payload == {"x": 1} and row.message_metadata == {"a": "b"}
    assert ledger.counts_by_status(engine) == {("eguma", "queued"): 1}


def test_only_one_of_many_concurrent_claims_wins(engine: Engine) -> None:
    b = booking()
    ledger.create_queued(engine, b)
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None
    wins: list[bool] = []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        barrier.wait()
        wins.append(ledger.claim(engine, row, f"token-{i}", lease_s=30))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    after = ledger.get(engine, b.idempotency_key)
    assert after is not None and after.status == Status.IN_PROGRESS and after.attempts == 1
    assert ledger.claimable(after, ledger.utcnow()) == "leased"


def test_issued_is_recorded_only_by_the_lease_holder(engine: Engine) -> None:
    b = booking()
    ledger.create_queued(engine, b)
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None and ledger.claim(engine, row, "mine", 30)
    tickets = [Ticket(ticket_id=None, code="4666825950402448933", category="c1")]
    assert ledger.record_issued(engine, b.idempotency_key, "someone-else", tickets, "B-1") is None
    recorded = ledger.record_issued(engine, b.idempotency_key, "mine", tickets, "B-1")
    assert recorded is not None and recorded.status == Status.ISSUED  # the row as recorded
    assert recorded.provider_reference == "B-1" and recorded.attempts == 1
    done = ledger.get(engine, b.idempotency_key)
    assert done is not None and done.status == Status.ISSUED
    assert done.tickets == [
        {"ticket_id": None, "code": "4666825950402448933", "category": "c1", "seat": None}
    ]
    assert done.completed_at is not None and done.lease_owner is None
    assert ledger.claimable(done, ledger.utcnow()) == "final"
    # A final row is never claimed again.
    assert ledger.claim(engine, done, "late", 30) is False


def test_retry_sets_next_attempt_and_keeps_the_error(engine: Engine) -> None:
    b = booking()
    ledger.create_queued(engine, b)
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None and ledger.claim(engine, row, "t1", 30)
    err = ResultError(type="provider_unavailable", message="503", http_status=503, retryable=True)
    assert ledger.record_retry(engine, b.idempotency_key, "t1", err, in_doubt=False, delay_s=30)
    r = ledger.get(engine, b.idempotency_key)
    assert r is not None and r.status == Status.RETRYING and r.http_status == 503
    assert r.next_attempt_at is not None
    assert ledger.claimable(r, ledger.utcnow()) == "not_due"
    assert ledger.claimable(r, ledger.utcnow() + timedelta(seconds=31)) is None


def test_takeover_of_an_expired_lease_is_in_doubt(engine: Engine) -> None:
    """A worker killed mid-call leaves in_progress behind; whoever takes over must know that
    the provider may already have created the tickets."""
    b = booking()
    ledger.create_queued(engine, b)
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None and ledger.claim(engine, row, "dead-worker", lease_s=0.2)
    time.sleep(0.4)
    stuck = ledger.get(engine, b.idempotency_key)
    assert stuck is not None and ledger.claimable(stuck, ledger.utcnow()) is None
    assert b.idempotency_key in ledger.stale_keys(engine, stale_after_s=60, limit=10)
    assert ledger.claim(engine, stuck, "rescuer", 30)
    taken = ledger.get(engine, b.idempotency_key)
    assert taken is not None and taken.in_doubt is True and taken.attempts == 2
    # The dead worker's late answer is ignored.
    assert ledger.record_issued(engine, b.idempotency_key, "dead-worker", [], None) is None


def test_sweeper_queries(engine: Engine) -> None:
    old, fresh = booking("old"), booking("fresh")
    ledger.create_queued(engine, old)
    ledger.create_queued(engine, fresh)
    long_ago = ledger.utcnow() - timedelta(minutes=10)
    with engine.begin() as conn:
        conn.execute(update(ledger.T).where(ledger.C.message_id == "old").values(updated_at=long_ago))
    assert ledger.stale_keys(engine, stale_after_s=60, limit=10) == [old.idempotency_key]
    # Touched: not re-driven again on the very next sweep.
    assert ledger.stale_keys(engine, stale_after_s=60, limit=10) == []

    err = ResultError(type="validation_error", message="bad", http_status=400)
    assert ledger.record_final_error(engine, fresh.idempotency_key, None, Status.FAILED, err, False)
    with engine.begin() as conn:
        conn.execute(update(ledger.T).where(ledger.C.message_id == "fresh").values(completed_at=long_ago))
    unpublished = ledger.unpublished(engine, grace_s=5, limit=10)
    assert [r.message_id for r in unpublished] == ["fresh"]
    ledger.mark_callback_sent(engine, fresh.idempotency_key)
    assert ledger.unpublished(engine, grace_s=5, limit=10) == []


def test_rejected_rows_are_final_at_once(engine: Engine) -> None:
    b = booking("bad")
    err = ResultError(type="invalid_payload", message="payload.items: too short")
    assert ledger.create_rejected(engine, b, err)
    r = ledger.get(engine, b.idempotency_key)
    assert r is not None and r.status == Status.REJECTED and r.completed_at is not None
    assert r.error_type == "invalid_payload" and r.attempts == 0
