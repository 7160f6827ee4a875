"""The attempt history (ticket_attempts) on SQLite and PostgreSQL: one row per provider call,
written in the transaction of the ledger step that records the call's outcome, scrubbed, and
bounded by the retention setting."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from sqlalchemy import Engine, delete, func, select, text

from schemas.result import ResultError
from schemas.statuses import Status
from tests.helpers import CUSTOMER_EMAIL, accept_booking
from tests.integration.test_outage_issuing import START, make_sim
from worker import issuing, ledger
from worker.providers.base import Attempt, Outcome, OutcomeKind

ERR = ResultError(type="provider_unavailable", message="e-guma is unavailable (HTTP 503)", http_status=503)


def note(n: int, worker: str = "w-1") -> ledger.AttemptNote:
    return ledger.AttemptNote(number=n, started_at=ledger.utcnow(), duration_ms=12.5, worker=worker)


def count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger.AT)).scalar_one())


def test_each_recorded_call_is_one_history_row(engine: Engine) -> None:
    key = accept_booking(engine, "eguma", "att-1")
    row = ledger.get(engine, key)
    assert row is not None and ledger.claim(engine, row, "t1", lease_s=30)
    assert ledger.record_retry(engine, key, "t1", ERR, in_doubt=True, delay_s=0, note=note(1)) is not None
    row = ledger.get(engine, key)
    assert row is not None and ledger.claim(engine, row, "t2", lease_s=30)
    done = ledger.record_issued(engine, key, "t2", [], "REF-1", note=note(2, "w-2"))
    assert done is not None and done.revision == 1
    history = ledger.attempts_of(engine, key)
    assert [(a["attempt"], a["outcome"], a["worker"]) for a in history] == [
        (1, "retry", "w-1"),
        (2, "issued", "w-2"),
    ]
    first = history[0]
    assert first["http_status"] == 503 and first["error_type"] == "provider_unavailable" and first["in_doubt"]
    assert first["duration_ms"] == 12.5 and history[1]["error_type"] is None and not history[1]["in_doubt"]


def test_a_5xx_answer_stays_known_through_later_attempts(engine: Engine) -> None:
    """e-guma reads its orders before any send after a 5xx: the fact must outlive the row's last
    error (here a lookup that timed out, with no HTTP status)."""
    key = accept_booking(engine, "eguma", "att-5xx")
    assert not ledger.answered_5xx(engine, key)
    row = ledger.get(engine, key)
    assert row is not None and ledger.claim(engine, row, "t1", lease_s=30)
    rate_limited = ResultError(type="rate_limited", message="slow down", http_status=429)
    assert ledger.record_retry(engine, key, "t1", rate_limited, in_doubt=False, delay_s=0, note=note(1))
    assert not ledger.answered_5xx(engine, key)  # a 429 is no server error
    row = ledger.get(engine, key)
    assert row is not None and ledger.claim(engine, row, "t2", lease_s=30)
    assert ledger.record_retry(engine, key, "t2", ERR, in_doubt=True, delay_s=0, note=note(2))
    row = ledger.get(engine, key)
    assert row is not None and ledger.claim(engine, row, "t3", lease_s=30)
    timeout = ResultError(type="timeout", message="read timeout", http_status=None)
    assert ledger.record_retry(engine, key, "t3", timeout, in_doubt=True, delay_s=0, note=note(3))
    after = ledger.get(engine, key)
    assert after is not None and after.http_status is None  # the row's last error forgot it
    assert ledger.answered_5xx(engine, key)
    assert not ledger.answered_5xx(engine, accept_booking(engine, "eguma", "att-other"))


def test_history_and_step_are_one_transaction(engine: Engine) -> None:
    """When the history row cannot be written, the step is not recorded either (and the other
    way round: a call whose lease was lost is still in the history, as lease_lost)."""
    key = accept_booking(engine, "eguma", "att-2")
    row = ledger.get(engine, key)
    assert row is not None and ledger.claim(engine, row, "tok", lease_s=30)
    # A lost lease: the row is not changed, the call is kept.
    assert ledger.record_retry(engine, key, "other", ERR, in_doubt=True, delay_s=0, note=note(1)) is None
    assert [a["outcome"] for a in ledger.attempts_of(engine, key)] == ["lease_lost"]
    # The history table refusing the insert undoes the step's UPDATE.
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE ticket_attempts RENAME TO ticket_attempts_away"))
    try:
        with pytest.raises(Exception):  # noqa: B017 - whichever error the driver raises
            ledger.record_issued(engine, key, "tok", [], "REF", note=note(1))
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE ticket_attempts_away RENAME TO ticket_attempts"))
    after = ledger.get(engine, key)
    assert after is not None and after.status == Status.IN_PROGRESS and after.lease_owner == "tok"
    assert after.revision == 0


def test_the_issue_path_scrubs_what_it_keeps(engine: Engine, redis_client: redis.Redis, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An error message echoing the account's key and the customer's email is kept without
    them, for every attempt (not only the last, which the row holds)."""
    sim = make_sim(engine, redis_client, monkeypatch)
    key = accept_booking(engine, "eguma", "att-3")
    row = ledger.get(engine, key)
    assert row is not None and ledger.claim(engine, row, "tok", lease_s=30)
    account = sim.deps.accounts[("eguma", "default")]
    secret = account.api_key.get_secret_value()  # type: ignore[union-attr]
    echo = f"bad request for {CUSTOMER_EMAIL} with key={secret} at https://x/y?api_key={secret}"
    outcome = Outcome(
        kind=OutcomeKind.RETRY, error=ResultError(type="provider_error", message=echo, http_status=500)
    )
    attempt = Attempt(
        idempotency_key=key, payload=row.payload or {}, account=account, number=1, in_doubt=False
    )
    issuing._record(
        sim.deps,
        row,
        "tok",
        attempt,
        outcome,
        0.01,
        ledger.AttemptNote(1, ledger.utcnow(), 10.0, "w", issuing._scrubbed(account, row, outcome)),
    )
    [kept] = ledger.attempts_of(engine, key)
    assert kept["message"] and secret not in kept["message"] and CUSTOMER_EMAIL not in kept["message"]
    assert kept["http_status"] == 500 and kept["outcome"] == "retry"


def test_retention_deletes_old_history_and_history_without_its_issuance(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_key = accept_booking(engine, "eguma", "att-old")
    new_key = accept_booking(engine, "eguma", "att-new")
    gone_key = accept_booking(engine, "eguma", "att-gone")
    real_now = ledger.utcnow()
    for key, age_days in ((old_key, 100), (new_key, 1), (gone_key, 1)):
        monkeypatch.setattr(ledger, "utcnow", lambda d=age_days: real_now - timedelta(days=d))
        row = ledger.get(engine, key)
        assert row is not None and ledger.claim(engine, row, "tok", lease_s=30)
        assert ledger.record_retry(engine, key, "tok", ERR, True, 0, note=note(1)) is not None
    monkeypatch.setattr(ledger, "utcnow", lambda: real_now)
    with engine.begin() as conn:  # an issuance deleted (by hand, or a future retention job)
        if engine.dialect.name == "sqlite":
            conn.execute(text("PRAGMA foreign_keys=OFF"))
        conn.execute(delete(ledger.T).where(ledger.C.idempotency_key == gone_key))
    if engine.dialect.name == "postgresql":
        # The foreign key deleted its history with it.
        assert not ledger.attempts_of(engine, gone_key)
    assert ledger.prune_attempts(engine, retention_s=90 * 86400.0) >= 1
    assert not ledger.attempts_of(engine, old_key) and not ledger.attempts_of(engine, gone_key)
    assert [a["attempt"] for a in ledger.attempts_of(engine, new_key)] == [1]
    assert ledger.prune_attempts(engine, retention_s=90 * 86400.0) == 0
    # 0: nothing by age.
    assert ledger.prune_attempts(engine, retention_s=0) == 0 and count(engine) == 1


def test_the_sweeper_prunes(
    engine: Engine, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = make_sim(engine, redis_client, monkeypatch, attempts_retention_s=3600.0)
    sim.sandbox.set_faults("eguma", fail_next=[{"status": 503}])
    key = sim.accept("eguma", "att-sweep")
    sim.run_until(START + 30, stop=lambda: ledger.is_final(ledger.get(engine, key)))  # type: ignore[arg-type]
    assert len(ledger.attempts_of(engine, key)) == 2
    sim.run_until(START + 3700)  # sweeps run every 15 s on the virtual clock
    assert ledger.attempts_of(engine, key) == []
    assert ledger.get(engine, key).status == Status.ISSUED  # type: ignore[union-attr]
