"""The columns of migration 0003 on SQLite and PostgreSQL: the first claim dates the first
provider call and stores the ticket codes; later claims change neither."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text

from schemas.keys import idempotency_key
from schemas.result import ResultError, Ticket
from schemas.statuses import Status
from worker import ledger


def booking(mid: str) -> ledger.NewBooking:
    return ledger.NewBooking(
        idempotency_key=idempotency_key("fourvenues", "default", mid),
        message_id=mid,
        provider="fourvenues",
        account="default",
        generation=0,
        payload={"tickets": [{}, {"qr_code": "MINE"}]},
        payload_sha256="h" * 64,
        reply_to="ticketrelay:results",
        metadata={},
    )


def test_first_claim_stores_codes_and_time_and_later_claims_keep_them(engine: Engine) -> None:
    b = booking("m-codes")
    ledger.create_queued(engine, b)
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None and row.qr_codes is None and row.first_attempt_at is None
    assert ledger.claim(engine, row, "t1", 30, qr_codes=["TRAAAA", None])
    first = ledger.get(engine, b.idempotency_key)
    assert first is not None and first.qr_codes == ["TRAAAA", None]
    assert first.first_attempt_at is not None
    err = ResultError(type="timeout", message="lost", retryable=True)
    assert ledger.record_retry(engine, b.idempotency_key, "t1", err, in_doubt=True, delay_s=0)
    again = ledger.get(engine, b.idempotency_key)
    assert again is not None and ledger.claim(engine, again, "t2", 30)
    second = ledger.get(engine, b.idempotency_key)
    assert second is not None and second.attempts == 2
    assert second.qr_codes == ["TRAAAA", None]
    assert second.first_attempt_at == first.first_attempt_at


def test_of_concurrent_first_claims_only_the_winners_codes_are_stored(engine: Engine) -> None:
    b = booking("m-race")
    ledger.create_queued(engine, b)
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None
    won: list[str] = []
    barrier = threading.Barrier(4)

    def contend(i: int) -> None:
        barrier.wait()
        if ledger.claim(engine, row, f"t{i}", 30, qr_codes=[f"CODE-{i}", None]):
            won.append(f"CODE-{i}")

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    stored = ledger.get(engine, b.idempotency_key)
    assert stored is not None and stored.qr_codes == [won[0], None]


def test_rows_without_codes_hold_sql_null(engine: Engine) -> None:
    b = booking("m-null")
    ledger.create_queued(engine, b)
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None and ledger.claim(engine, row, "t", 30)
    with engine.connect() as conn:
        value = conn.execute(
            text("select qr_codes from ticket_issuances where idempotency_key = :k"), {"k": b.idempotency_key}
        ).scalar()
    assert value is None


def test_needs_review_records_the_confirmed_tickets(engine: Engine) -> None:
    b = booking("m-review")
    ledger.create_queued(engine, b)
    row = ledger.get(engine, b.idempotency_key)
    assert row is not None and ledger.claim(engine, row, "t", 30)
    err = ResultError(type="unconfirmed_tickets", message="1 of 2", retryable=False)
    done = ledger.record_final_error(
        engine,
        b.idempotency_key,
        "t",
        Status.NEEDS_REVIEW,
        err,
        True,
        tickets=[Ticket(ticket_id="t1", code="C1")],
        provider_reference="pay1",
    )
    assert done is not None and done.status == Status.NEEDS_REVIEW
    assert done.tickets == [{"ticket_id": "t1", "code": "C1", "category": None, "seat": None}]
    assert done.provider_reference == "pay1"
