"""worker.issuing.process with the in-process sandbox (httpx MockTransport), fakeredis and a
real SQLite file: the decisions of one task run."""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import timedelta
from typing import Any

import fakeredis
import httpx
import pytest
from provider_fakes import FakeProvider, fv_not_found, fv_ticket
from sqlalchemy import Engine

from schemas.result import ResultError
from schemas.statuses import Status
from tests.helpers import accept_booking
from worker import issuing, ledger
from worker.db import make_engine
from worker.devtools.sandbox.core import Sandbox
from worker.providers import build_client, get_provider
from worker.providers.codes import derive_qr_code
from worker.settings import AccountConfig, Settings, sandbox_accounts


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(seed=1)


@pytest.fixture
def deps(sqlite_url: str, sandbox: Sandbox) -> issuing.Deps:
    settings = Settings(database_url=sqlite_url, max_countdown_s=30, backoff_base_s=0.5, backoff_cap_s=60)
    accounts = sandbox_accounts("http://sandbox", settings)

    def factory(account: AccountConfig) -> httpx.Client:
        return build_client(account, transport=httpx.MockTransport(sandbox.handle))

    return issuing.Deps(
        engine=make_engine(sqlite_url),
        redis=fakeredis.FakeRedis(),
        settings=settings,
        accounts=accounts,
        clients=issuing.ClientCache(factory),
    )


def accept(engine: Engine, provider: str, mid: str) -> str:
    return accept_booking(engine, provider, mid)


def results(deps: issuing.Deps) -> list[dict[str, Any]]:
    return [json.loads(f[b"result"]) for _i, f in deps.redis.xrange("ticketrelay:results")]


def make_due(deps: issuing.Deps, key: str) -> None:
    from sqlalchemy import update

    with deps.engine.begin() as conn:
        conn.execute(
            update(ledger.T).where(ledger.C.idempotency_key == key).values(next_attempt_at=ledger.utcnow())
        )


@pytest.mark.parametrize("provider", ["remypass", "fourvenues", "fourvenues_channels", "eguma"])
def test_issue_records_and_publishes(deps: issuing.Deps, provider: str) -> None:
    key = accept(deps.engine, provider, "m-1")
    assert issuing.process(deps, key) == issuing.Next()
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "issued" and row.attempts == 1 and row.tickets
    assert row.callback_sent_at is not None
    [res] = results(deps)
    assert res["status"] == "issued" and res["tickets"] == row.tickets
    # Running the task again (a redelivery) calls nobody and publishes nothing new.
    issuing.process(deps, key)
    assert len(results(deps)) == 1


def test_retry_schedules_a_countdown_below_the_limit(deps: issuing.Deps, sandbox: Sandbox) -> None:
    sandbox.set_faults("eguma", fail_next=[{"status": 503}])
    key = accept(deps.engine, "eguma", "m-2")
    nxt = issuing.process(deps, key)
    assert nxt.countdown is not None and 0 <= nxt.countdown <= deps.settings.max_countdown_s
    row = ledger.get(deps.engine, key)
    # Nothing documents that a 503 means "not processed": the next attempt must take care.
    assert row is not None and row.status == "retrying" and row.http_status == 503 and row.in_doubt


def test_long_retry_after_is_parked_for_the_sweeper(deps: issuing.Deps, sandbox: Sandbox) -> None:
    sandbox.set_faults("eguma", fail_next=[{"status": 429, "retry_after": 45}])
    key = accept(deps.engine, "eguma", "m-3")
    assert issuing.process(deps, key).countdown is None  # 45 s > max countdown: parked
    row = ledger.get(deps.engine, key)
    assert row is not None and row.next_attempt_at is not None
    wait = (ledger.as_utc(row.next_attempt_at) - ledger.utcnow()).total_seconds()  # type: ignore[operator]
    assert 40 < wait <= 45.5
    # Not due yet: a stray task does nothing.
    issuing.process(deps, key)
    assert ledger.get(deps.engine, key).attempts == 1  # type: ignore[union-attr]


def test_retries_run_out_as_failed_when_nothing_can_have_been_created(
    deps: issuing.Deps, sandbox: Sandbox
) -> None:
    sandbox.set_faults("eguma", fail_next=[{"status": 429}] * 10)
    key = accept(deps.engine, "eguma", "m-4")
    for _ in range(deps.accounts[("eguma", "default")].max_attempts):
        issuing.process(deps, key)
        make_due(deps, key)
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "failed" and row.error_type == "retries_exhausted"
    assert row.attempts == deps.accounts[("eguma", "default")].max_attempts
    assert results(deps)[-1]["error"]["retryable"] is True


@pytest.mark.parametrize("provider", ["remypass", "fourvenues", "fourvenues_channels", "eguma"])
def test_running_out_while_in_doubt_is_needs_review(
    deps: issuing.Deps, sandbox: Sandbox, provider: str
) -> None:
    """Answers that may have created tickets (500s) until the attempts run out must not look
    like a clean failure: nothing confirmed that no ticket exists."""
    sandbox.set_faults(provider, fail_next=[{"status": 500}] * 20)
    key = accept(deps.engine, provider, "m-5")
    for _ in range(20):
        issuing.process(deps, key)
        make_due(deps, key)
        row = ledger.get(deps.engine, key)
        assert row is not None
        if ledger.is_final(row):
            break
    assert row.status == "needs_review", (row.status, row.error_type, row.error_message)


def test_permanent_error_is_final_at_once(deps: issuing.Deps, sandbox: Sandbox) -> None:
    sandbox.set_faults("remypass", fail_next=[{"status": 400}])
    key = accept(deps.engine, "remypass", "m-6")
    assert issuing.process(deps, key) == issuing.Next()
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "failed" and row.attempts == 1 and row.http_status == 400


def test_account_removed_from_config_fails_clearly(deps: issuing.Deps) -> None:
    key = accept(deps.engine, "eguma", "m-7")
    del deps.accounts[("eguma", "default")]
    issuing.process(deps, key)
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "failed" and row.error_type == "configuration_error"
    assert row.attempts == 0


def test_sweep_redrives_stale_rows_and_publishes_unsent_results(deps: issuing.Deps) -> None:
    from sqlalchemy import update

    key = accept(deps.engine, "eguma", "m-8")
    with deps.engine.begin() as conn:
        conn.execute(update(ledger.T).values(updated_at=ledger.utcnow().replace(year=2020)))
    sent: list[str] = []
    assert issuing.sweep(deps, sent.append) == {"redriven": 1, "republished": 0}
    assert sent == [key]
    issuing.process(deps, key)
    with deps.engine.begin() as conn:  # as if the worker died before publishing
        conn.execute(
            update(ledger.T).values(callback_sent_at=None, completed_at=ledger.utcnow().replace(year=2020))
        )
    deps.redis.delete("ticketrelay:results")
    assert issuing.sweep(deps, sent.append) == {"redriven": 0, "republished": 1}
    assert [r["status"] for r in results(deps)] == ["issued"]


def test_backoff_is_exponential_with_full_jitter_and_retry_after_floor() -> None:
    from worker.backoff import next_delay

    rng = random.Random(3)
    samples = [next_delay(4, 1.0, 300, None, rng) for _ in range(500)]
    assert 0 <= min(samples) < 1 and 6 < max(samples) <= 8  # uniform over [0, 8]
    assert all(next_delay(1, 1.0, 300, 30, rng) >= 30 for _ in range(50))
    assert next_delay(20, 1.0, 300, None, rng) <= 300
    assert next_delay(1, 1.0, 300, 86400, rng) == 300  # an absurd Retry-After is capped


def test_a_batch_reads_once_publishes_together_and_survives_a_broken_key(
    deps: issuing.Deps, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [accept(deps.engine, "eguma", f"m-batch-{i}") for i in range(4)]
    selects: list[list[str]] = []
    real_get_many = ledger.get_many

    def counting_get_many(engine: Engine, wanted: list[str]) -> dict[str, Any]:
        selects.append(wanted)
        return real_get_many(engine, wanted)

    monkeypatch.setattr(ledger, "get_many", counting_get_many)
    real_claim = ledger.claim

    def claim_breaking_one(engine: Engine, row: Any, token: str, lease_s: float, **more: Any) -> bool:
        if row.idempotency_key == keys[1]:
            raise RuntimeError("a bug in one key")
        return real_claim(engine, row, token, lease_s, **more)

    monkeypatch.setattr(ledger, "claim", claim_breaking_one)
    ran: list[int] = []

    def runner(fn: Any, rows: list[Any]) -> list[Any]:
        ran.append(len(rows))
        return [fn(r) for r in reversed(rows)][::-1]  # any order must map back to the right key

    out = issuing.process_many(deps, [*keys, keys[0], "no-such-key"], run=runner)
    assert selects == [[*keys, "no-such-key"]]  # one SELECT for the batch, duplicates folded
    assert ran == [4]
    assert set(out) == set(keys)
    got = results(deps)
    assert sorted(r["idempotency_key"] for r in got) == sorted([keys[0], keys[2], keys[3]])
    assert all(r["status"] == "issued" for r in got)
    assert ledger.get(deps.engine, keys[1]).status == "queued"  # type: ignore[union-attr]
    for key in (keys[0], keys[2], keys[3]):
        assert ledger.get(deps.engine, key).callback_sent_at is not None  # type: ignore[union-attr]


def test_a_batch_with_rows_already_final_republishes_only_the_unsent(deps: issuing.Deps) -> None:
    a, b = accept(deps.engine, "eguma", "m-f1"), accept(deps.engine, "eguma", "m-f2")
    issuing.process(deps, a)
    assert len(results(deps)) == 1
    issuing.process_many(deps, [a, b])
    assert [r["idempotency_key"] for r in results(deps)] == [a, b]  # a is not sent twice


# --- scripted providers: stored codes, the first call's time, needs_review with what is known --


def scripted(deps: issuing.Deps, fake: FakeProvider) -> issuing.Deps:
    """The same deps, with every provider call answered by `fake`."""
    return dataclasses.replace(
        deps,
        clients=issuing.ClientCache(
            lambda account: build_client(account, transport=httpx.MockTransport(fake.handler))
        ),
    )


FV_CREATE = "/fourvenues/integrations/tickets/"


def fv_by_code(code: str) -> str:
    return f"/fourvenues/integrations/tickets/by-code/{code}"


def codes_are_kept(deps: issuing.Deps) -> None:
    """As if an earlier answer had shown that Fourvenues gives tickets the codes we send (the
    docs do not say so; without it a code not found proves nothing)."""
    base = deps.accounts[("fourvenues", "default")].base_url
    get_provider("fourvenues")._keeps_codes[base] = True  # type: ignore[attr-defined]


def sent_codes(request: httpx.Request) -> list[str]:
    return [t["qr_code"] for t in json.loads(request.content)["tickets"]]


def set_row(deps: issuing.Deps, key: str, **values: Any) -> None:
    from sqlalchemy import update

    with deps.engine.begin() as conn:
        conn.execute(update(ledger.T).where(ledger.C.idempotency_key == key).values(**values))


def test_codes_are_random_stored_at_the_first_claim_and_sent_on_every_attempt(deps: issuing.Deps) -> None:
    fake = FakeProvider().on("POST", FV_CREATE, httpx.Response(503))
    deps = scripted(deps, fake)
    key = accept(deps.engine, "fourvenues", "m-codes")
    issuing.process(deps, key)
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "retrying" and row.in_doubt
    stored = row.qr_codes
    assert stored is not None and len(stored) == 2 and len(set(stored)) == 2
    # Not the old derivation, which anyone knowing the key could compute.
    assert all(code != derive_qr_code(key, i) for i, code in enumerate(stored))
    first_at = ledger.as_utc(row.first_attempt_at)
    assert first_at is not None
    codes_are_kept(deps)
    # The next attempt looks the stored codes up (absent), then sends exactly the same codes.
    for code in stored:
        fake.on("GET", fv_by_code(code), fv_not_found())
    tickets = [fv_ticket(code, i) for i, code in enumerate(stored)]
    fake.on("POST", FV_CREATE, httpx.Response(200, json={"success": True, "data": tickets}))
    make_due(deps, key)
    issuing.process(deps, key)
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "issued"
    posts = fake.calls("POST")
    assert [sent_codes(p) for p in posts] == [stored, stored]
    assert row.qr_codes == stored and ledger.as_utc(row.first_attempt_at) == first_at
    assert [t["code"] for t in row.tickets] == stored


def test_a_row_in_flight_without_stored_codes_keeps_the_derived_codes(deps: issuing.Deps) -> None:
    fake = FakeProvider()
    deps = scripted(deps, fake)
    key = accept(deps.engine, "fourvenues", "m-legacy")
    codes_are_kept(deps)
    derived = [derive_qr_code(key, i) for i in range(2)]
    for code in derived:
        fake.on("GET", fv_by_code(code), fv_not_found())
    fake.on(
        "POST",
        FV_CREATE,
        httpx.Response(200, json={"success": True, "data": [fv_ticket(c) for c in derived]}),
    )
    # As a row from before the migration: one call made, no codes stored, in doubt.
    set_row(deps, key, status="retrying", attempts=1, in_doubt=True, next_attempt_at=ledger.utcnow())
    issuing.process(deps, key)
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "issued"
    assert [sent_codes(p) for p in fake.calls("POST")] == [derived]
    assert row.qr_codes is None  # never new codes for a row that may have sent some


def test_only_the_first_claim_may_store_codes(deps: issuing.Deps) -> None:
    key = accept(deps.engine, "fourvenues", "m-claim")
    set_row(deps, key, attempts=1)
    row = ledger.get(deps.engine, key)
    assert row is not None
    with pytest.raises(ValueError):
        ledger.claim(deps.engine, row, "t", 30, qr_codes=["X", "Y"])


def test_an_unconfirmable_lookup_ends_needs_review_after_one_create(deps: issuing.Deps) -> None:
    """Point 1 end to end: the outside simulator's unknown routes answer an HTML 404."""
    fake = FakeProvider().on("POST", FV_CREATE, httpx.ReadTimeout("lost"))
    deps = scripted(deps, fake)
    key = accept(deps.engine, "fourvenues", "m-unknown-route")
    for _ in range(20):
        issuing.process(deps, key)
        make_due(deps, key)
        row = ledger.get(deps.engine, key)
        assert row is not None
        if ledger.is_final(row):
            break
    assert row.status == "needs_review", (row.status, row.error_type)
    assert len(fake.calls("POST")) == 1


def test_needs_review_keeps_the_tickets_the_provider_confirmed(deps: issuing.Deps) -> None:
    fake = FakeProvider()
    deps = scripted(deps, fake)
    key = accept(deps.engine, "fourvenues", "m-partial")

    def one_object(request: httpx.Request) -> httpx.Response:
        first, second = sent_codes(request)
        fake.on("GET", fv_by_code(second), fv_not_found())
        return httpx.Response(200, json={"success": True, "data": fv_ticket(first)})

    fake.on("POST", FV_CREATE, one_object)
    issuing.process(deps, key)
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "needs_review"
    assert row.qr_codes is not None
    assert [t["code"] for t in row.tickets] == [row.qr_codes[0]]
    assert row.provider_reference == "pay1"
    [res] = results(deps)
    assert res["status"] == "needs_review" and [t["code"] for t in res["tickets"]] == [row.qr_codes[0]]


EG_BOOK = "/eguma/v1/ticketing/booking.json"
EG_ORDERS = "/eguma/v1/ticketing/orders.json"


@pytest.mark.parametrize(("hours", "calls"), [(70, [EG_BOOK]), (72.5, [EG_ORDERS])])
def test_an_eguma_key_past_its_lifetime_is_never_sent_again(
    deps: issuing.Deps, hours: float, calls: list[str]
) -> None:
    booked = {"booking_id": "b1", "booking_reference": "T1", "tickets": [{"ticket_number": "1"}]}
    fake = (
        FakeProvider()
        .on("POST", EG_BOOK, httpx.Response(200, json=booked))
        .on("GET", EG_ORDERS, httpx.Response(200, json=[]))
    )
    deps = scripted(deps, fake)
    key = accept(deps.engine, "eguma", f"m-aged-{hours}")
    # The first call timed out `hours` ago; the sweeper re-drives the row now.
    first = ledger.utcnow() - timedelta(hours=hours)
    set_row(deps, key, status="retrying", attempts=1, in_doubt=True, first_attempt_at=first)
    make_due(deps, key)
    issuing.process(deps, key)
    row = ledger.get(deps.engine, key)
    assert row is not None
    assert [r.url.path for r in fake.requests] == calls
    assert row.status == ("issued" if hours < 71 else "needs_review")
    assert ledger.as_utc(row.first_attempt_at) == first  # the first call's time never moves


def test_a_legacy_row_without_first_attempt_at_is_aged_by_its_creation(deps: issuing.Deps) -> None:
    fake = FakeProvider().on("GET", EG_ORDERS, httpx.Response(200, json=[]))
    deps = scripted(deps, fake)
    key = accept(deps.engine, "eguma", "m-aged-legacy")
    old = ledger.utcnow() - timedelta(days=5)
    set_row(deps, key, status="retrying", attempts=1, in_doubt=True, created_at=old)
    make_due(deps, key)
    issuing.process(deps, key)
    assert [r.url.path for r in fake.requests] == [EG_ORDERS]
    row = ledger.get(deps.engine, key)
    assert row is not None and row.status == "needs_review"


def test_exhausted_names_why_and_the_last_error() -> None:
    last = ResultError(type="timeout", message="no answer", http_status=504, retryable=True)
    error = issuing.exhausted("gave up after 3 of 3 attempts", last)
    assert error.type == "retries_exhausted" and error.retryable
    assert error.message == "gave up after 3 of 3 attempts (last error: timeout: no answer)"
    assert error.http_status == 504
    bare = issuing.exhausted("gave up after 10 min unfinished", None)
    assert bare.message == "gave up after 10 min unfinished" and bare.http_status is None


def test_retry_later_parks_waits_longer_than_a_countdown(deps: issuing.Deps) -> None:
    assert issuing.retry_later(deps, 5.0) == (issuing.Next(countdown=5.0), None)
    assert issuing.retry_later(deps, 31.0) == (issuing.Next(), None)  # max_countdown_s is 30


def test_row_error_reads_back_what_was_recorded(deps: issuing.Deps) -> None:
    key = accept_booking(deps.engine, "eguma", "m-row-error")
    row = ledger.get(deps.engine, key)
    assert row is not None and ledger.row_error(row) is None
    error = ResultError(type="provider_rejected", message="sold out", http_status=409, retryable=False)
    assert ledger.claim(deps.engine, row, "t", 30)
    recorded = ledger.record_final_error(deps.engine, key, "t", Status.FAILED, error, False)
    assert recorded is not None and ledger.row_error(recorded) == error
