"""The group commit (worker.db.GroupCommit) on SQLite and PostgreSQL: the claims and records of
many threads share transactions, yet each keeps its own answer, a write the database refuses
fails alone, and the compare-and-set of a claim still lets only one of two claimants win."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import Connection, Engine, text

from schemas.statuses import Status
from tests.helpers import accept_booking
from worker import db, ledger


def test_many_threads_claim_and_record_each_with_its_own_answer(engine: Engine) -> None:
    keys = [accept_booking(engine, "eguma", f"gc-{i}") for i in range(120)]
    rows = ledger.get_many(engine, keys)
    batches: list[int] = []
    real_execute = db.GroupCommit._execute

    def counting(self: db.GroupCommit, batch: list[db._Write]) -> None:
        batches.append(len(batch))
        real_execute(self, batch)

    def step(key: str) -> str:
        row = rows[key]
        assert ledger.claim(engine, row, f"tok-{key}", lease_s=30)
        done = ledger.record_issued(engine, key, f"tok-{key}", [], f"REF-{key}")
        assert done is not None
        return str(done.provider_reference)

    db.GroupCommit._execute = counting  # type: ignore[method-assign]
    try:
        with ThreadPoolExecutor(max_workers=48) as pool:
            refs = list(pool.map(step, keys))
    finally:
        db.GroupCommit._execute = real_execute  # type: ignore[method-assign]
    assert refs == [f"REF-{k}" for k in keys]  # each caller got its own row back
    after = ledger.get_many(engine, keys)
    assert {r.status for r in after.values()} == {Status.ISSUED}
    assert sum(batches) == 2 * len(keys)
    assert max(batches) > 1, "with 48 threads some writes must have shared a transaction"


def test_two_claims_of_one_row_in_one_transaction_let_one_win(engine: Engine) -> None:
    key = accept_booking(engine, "eguma", "gc-race")
    row = ledger.get(engine, key)
    assert row is not None
    start = threading.Barrier(8)

    def claim(i: int) -> bool:
        start.wait()
        return ledger.claim(engine, row, f"tok-{i}", lease_s=30)

    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(claim, range(8)))
    assert won.count(True) == 1
    after = ledger.get(engine, key)
    assert after is not None and after.attempts == 1


def test_a_refused_write_fails_alone(engine: Engine) -> None:
    """A write the database refuses (here: a table that does not exist) rolls back the shared
    transaction; the others are run again on their own and succeed."""
    keys = [accept_booking(engine, "eguma", f"gc-bad-{i}") for i in range(6)]
    group = db.GroupCommit(engine, threading.Lock())

    def bad(conn: Connection) -> int:
        conn.execute(text("UPDATE no_such_table SET x = 1"))
        return 0

    def good(key: str):  # type: ignore[no-untyped-def]
        def write(conn: Connection) -> int:
            return int(
                conn.execute(
                    text("UPDATE ticket_issuances SET provider_reference = :r WHERE idempotency_key = :k"),
                    {"r": f"R-{key}", "k": key},
                ).rowcount
            )

        return write

    writes = [db._Write(good(k)) for k in keys[:3]] + [db._Write(bad)]
    writes += [db._Write(good(k)) for k in keys[3:]]
    group._execute(writes)
    assert all(w.done for w in writes)
    assert [w.error is None for w in writes] == [True, True, True, False, True, True, True]
    assert [w.value for w in writes if w.error is None] == [1] * 6
    refs = {k: r.provider_reference for k, r in ledger.get_many(engine, keys).items()}
    assert refs == {k: f"R-{k}" for k in keys}


def test_a_write_torn_down_mid_batch_does_not_leave_others_waiting(engine: Engine) -> None:
    group = db.GroupCommit(engine, threading.Lock())

    class Teardown(BaseException):
        pass

    def dies(conn: Connection) -> int:
        raise Teardown

    writes = [db._Write(dies), db._Write(lambda conn: 1)]
    with pytest.raises(Teardown):
        group._execute(writes)
    assert all(w.done for w in writes)
    assert isinstance(writes[1].error, RuntimeError)
