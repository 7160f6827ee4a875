"""Cancellations (CONTRACT.md 1.1) against the in-process simulators, on SQLite and
PostgreSQL: one void call per booking however often it is cancelled, waiting for a booking in
flight, every outcome, a lost void answer reconciled, the providers' refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from sqlalchemy import Engine

from schemas.statuses import Status
from tests.integration.cancel_harness import PROVIDERS, VOID_ROUTES, Harness
from worker import cancelling, issuing, ledger
from worker.providers import PROVIDERS as ADAPTERS

# The status a voided ticket has in the simulators' ground truth.
VOIDED = {
    "remypass": "voided",
    "fourvenues": "refunded",
    "fourvenues_channels": "voided",
    "eguma": "cancelled",
}


@pytest.fixture
def h(engine: Engine, redis_client: redis.Redis) -> Iterator[Harness]:
    for adapter in ADAPTERS.values():
        adapter.forget()
    yield Harness(engine, redis_client)


def _issued(h: Harness, provider: str, mid: str = "BK-1") -> str:
    key = h.book(provider, mid)
    assert h.work(key) == Status.ISSUED
    return key


def _one_call_each(h: Harness, provider: str) -> None:
    calls = h.cancel_calls(provider)
    assert calls and set(calls.values()) == {1}, calls


@pytest.mark.parametrize("provider", PROVIDERS)
def test_cancel_voids_the_booking_once_and_corrects_its_result(h: Harness, provider: str) -> None:
    booking = _issued(h, provider)
    cancel = h.cancel(provider, "C-1", "BK-1")

    assert h.work(cancel) == Status.CANCELLED

    _one_call_each(h, provider)
    assert set(h.issued_status(provider).values()) == {VOIDED[provider]}
    row = h.row(booking)
    assert row.status == Status.CANCELLED and row.revision == 2
    (first, corrected) = h.results(booking)
    assert (first.status, first.revision) == ("issued", 1)
    assert (corrected.status, corrected.revision, corrected.operation) == ("cancelled", 2, "issue")
    assert corrected.tickets == first.tickets
    (result,) = h.results(cancel)
    assert (result.operation, result.cancels, result.status, result.revision) == (
        "cancel",
        "BK-1",
        "cancelled",
        1,
    )
    assert result.attempts == 1
    assert result.provider_reference == row.provider_reference


@pytest.mark.parametrize("provider", PROVIDERS)
def test_repeated_and_second_cancels_make_no_second_call(h: Harness, provider: str) -> None:
    _issued(h, provider)
    first = h.cancel(provider, "C-1", "BK-1")
    assert h.work(first) == Status.CANCELLED
    h.run(first)  # the same cancel delivered again
    assert (
        h.accept({"message_id": "C-1", "operation": "cancel", "cancels": "BK-1", "provider": provider})
        == first
    )
    second = h.cancel(provider, "C-2", "BK-1")

    assert h.work(second) == Status.CANCELLED

    _one_call_each(h, provider)
    assert h.row(second).attempts == 0


def test_a_second_cancel_waits_for_the_first_and_ends_as_it_did(h: Harness) -> None:
    _issued(h, "eguma")
    h.sandbox.advance_clock(40 * 86400)  # past the start: e-guma refuses
    first = h.cancel("eguma", "C-1", "BK-1")
    second = h.cancel("eguma", "C-2", "BK-1")
    booking = ledger.find_booking(h.deps.engine, "eguma", "default", "BK-1")
    assert booking is not None
    assert ledger.take_cancel(h.deps.engine, booking.idempotency_key, first) == first

    h.run(second)
    assert h.row(second).status == Status.RETRYING  # the first has not acted yet
    assert h.work(first) == Status.FAILED
    assert h.work(second) == Status.FAILED

    assert sum(h.cancel_calls("eguma").values()) == 1
    assert h.row(second).error_type == h.row(first).error_type == "cancel_refused"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_cancel_before_the_booking_is_final_waits_for_it(h: Harness, provider: str) -> None:
    booking = h.book(provider, "BK-1")
    cancel = h.cancel(provider, "C-1", "BK-1")

    follow = h.run(cancel)

    assert follow.countdown is not None and follow.countdown > 0
    assert h.row(cancel).status == Status.RETRYING and h.row(cancel).attempts == 0
    assert h.cancel_calls(provider) == {}
    assert h.work(booking) == Status.ISSUED
    assert h.work(cancel) == Status.CANCELLED
    _one_call_each(h, provider)


def test_a_waiting_cancel_is_redriven_by_the_sweeper(h: Harness) -> None:
    h.book("remypass", "BK-1")
    cancel = h.cancel("remypass", "C-1", "BK-1")
    h.run(cancel)
    h.deps.settings = h.settings.model_copy(update={"stale_after_s": 0.0})
    h.due_now(cancel)
    enqueued: list[str] = []
    time.sleep(0.01)

    issuing.sweep(h.deps, enqueued.append)

    assert cancel in enqueued


def test_a_cancel_of_a_booking_that_failed_is_cancelled_without_a_call(h: Harness) -> None:
    h.sandbox.set_faults("remypass", fail_next=[{"status": 400}])
    booking = h.book("remypass", "BK-2")
    assert h.work(booking) == Status.FAILED
    cancel = h.cancel("remypass", "C-1", "BK-2")

    assert h.work(cancel) == Status.CANCELLED

    assert h.cancel_calls("remypass") == {}
    assert h.row(booking).status == Status.FAILED
    (result,) = h.results(cancel)
    assert result.error is None and result.attempts == 0


def test_a_cancel_of_a_rejected_booking_is_cancelled_without_a_call(h: Harness) -> None:
    from schemas.result import ResultError

    key = h.book("remypass", "BK-1")
    ledger.finish_without_call(
        h.deps.engine, key, Status.REJECTED, ResultError(type="invalid_payload", message="x")
    )
    cancel = h.cancel("remypass", "C-1", "BK-1")

    assert h.work(cancel) == Status.CANCELLED
    assert h.cancel_calls("remypass") == {}


def test_a_cancel_of_a_booking_in_review_needs_review(h: Harness) -> None:
    h.sandbox.set_faults("remypass", fail_next=[{"kind": "malformed_after_create"}])
    booking = h.book("remypass", "BK-1")
    assert h.work(booking) == Status.NEEDS_REVIEW
    cancel = h.cancel("remypass", "C-1", "BK-1")

    assert h.work(cancel) == Status.NEEDS_REVIEW

    assert h.cancel_calls("remypass") == {}
    assert h.row(cancel).error_type == "booking_needs_review"
    assert h.row(booking).status == Status.NEEDS_REVIEW


def test_a_cancel_of_an_unknown_message_id_is_rejected_after_the_grace(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    cancel = h.cancel("remypass", "C-1", "NEVER-SENT")
    h.run(cancel)
    assert h.row(cancel).status == Status.RETRYING  # it may still be on its way in

    monkeypatch.setattr(cancelling, "GRACE_S", 0.0)
    assert h.work(cancel) == Status.REJECTED

    (result,) = h.results(cancel)
    assert result.error is not None and result.error.type == "unknown_booking"
    assert (result.operation, result.cancels) == ("cancel", "NEVER-SENT")


def test_a_cancel_of_another_account_s_booking_is_not_found(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import SecretStr

    _issued(h, "remypass")
    second = h.accounts[("remypass", "default")].model_copy(
        update={"name": "second", "api_key": SecretStr("sandbox-key-2")}
    )
    h.accounts[("remypass", "second")] = second
    env = {
        "message_id": "C-1",
        "operation": "cancel",
        "cancels": "BK-1",
        "provider": "remypass",
        "account": "second",
    }
    cancel = h.accept(env)
    monkeypatch.setattr(cancelling, "GRACE_S", 0.0)

    assert h.work(cancel) == Status.REJECTED
    assert h.cancel_calls("remypass") == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_lost_void_answer_is_reconciled_without_a_second_call(h: Harness, provider: str) -> None:
    booking = _issued(h, provider)
    cancel = h.cancel(provider, "C-1", "BK-1")
    h.lose_answer.append(VOID_ROUTES[provider])

    h.run(cancel)
    assert h.row(cancel).status == Status.RETRYING and h.row(cancel).in_doubt

    assert h.work(cancel) == Status.CANCELLED
    _one_call_each(h, provider)
    assert h.row(booking).status == Status.CANCELLED


def test_a_worker_killed_mid_void_is_taken_over_without_a_second_call(h: Harness) -> None:
    _issued(h, "remypass")
    cancel = h.cancel("remypass", "C-1", "BK-1")
    row = h.row(cancel)
    booking = ledger.find_booking(h.deps.engine, "remypass", "default", "BK-1")
    assert booking is not None
    ledger.take_cancel(h.deps.engine, booking.idempotency_key, cancel)
    # A worker claimed, called (the pass is revoked), then died before recording.
    assert ledger.claim(h.deps.engine, row, "dead-worker", lease_s=0.0)
    pass_id = booking.provider_reference
    h.sandbox.handle(
        httpx.Request(
            "POST",
            f"http://sandbox/remypass/api/v1/public/passes/{pass_id}/revoke",
            headers={"X-API-Key": "sandbox-key"},
        )
    )

    assert h.work(cancel) == Status.CANCELLED
    assert h.cancel_calls("remypass") == {pass_id: 1}


def test_eguma_refuses_after_the_start_and_the_booking_stays_issued(h: Harness) -> None:
    booking = _issued(h, "eguma")
    h.sandbox.advance_clock(40 * 86400)
    cancel = h.cancel("eguma", "C-1", "BK-1")

    assert h.work(cancel) == Status.FAILED

    row = h.row(cancel)
    assert row.error_type == "cancel_refused" and "after the start" in (row.error_message or "")
    assert h.row(booking).status == Status.ISSUED
    assert len(h.results(booking)) == 1
    assert set(h.issued_status("eguma").values()) == {"active"}


@pytest.mark.parametrize("status", [400, 409, 422])
def test_eguma_refuses_a_checked_in_booking_whatever_its_status_code(h: Harness, status: int) -> None:
    h.sandbox.set_switches("eguma", cancel_refused_status=status)
    booking = _issued(h, "eguma")
    h.sandbox.check_in("eguma", h.row(booking).tickets[0]["code"])
    cancel = h.cancel("eguma", "C-1", "BK-1")

    assert h.work(cancel) == Status.FAILED

    assert h.row(cancel).attempts == 1  # a refusal, not a retry
    assert "checked in" in (h.row(cancel).error_message or "")
    assert h.row(booking).status == Status.ISSUED


def test_eguma_only_the_creating_key_may_cancel(h: Harness) -> None:
    from pydantic import SecretStr

    _issued(h, "eguma")
    colleague = h.accounts[("eguma", "default")].model_copy(
        update={"api_key": SecretStr("sandbox-key-colleague")}
    )
    h.deps.accounts = {**h.accounts, ("eguma", "default"): colleague}
    cancel = h.cancel("eguma", "C-1", "BK-1")

    assert h.work(cancel) == Status.FAILED
    assert h.row(cancel).error_type == "not_found"
    assert "only the key that created" in (h.row(cancel).error_message or "")


def test_eguma_cancel_sends_no_idempotency_key(h: Harness) -> None:
    seen: list[dict[str, str]] = []
    inner = h.sandbox.handle

    def spy(request):  # type: ignore[no-untyped-def]
        if request.url.path.endswith("cancel-booking.json"):
            seen.append(dict(request.headers))
        return inner(request)

    h.sandbox.handle = spy  # type: ignore[method-assign]
    _issued(h, "eguma")
    assert h.work(h.cancel("eguma", "C-1", "BK-1")) == Status.CANCELLED
    assert len(seen) == 1 and "idempotency-key" not in seen[0]


def test_eguma_already_cancelled_after_a_lost_answer_confirms(h: Harness) -> None:
    # The lookup cannot find the order (orders.json filtered by another name): the cancel is
    # sent again and e-guma's "already cancelled" is the confirmation.
    booking = _issued(h, "eguma")
    cancel = h.cancel("eguma", "C-1", "BK-1")
    h.lose_answer.append(VOID_ROUTES["eguma"])
    h.run(cancel)
    with h.deps.engine.begin() as conn:
        from sqlalchemy import update

        row = h.row(booking)
        payload = dict(row.payload)
        payload["customer"] = {**payload["customer"], "last_name": "Someone Else"}
        conn.execute(update(ledger.T).where(ledger.C.idempotency_key == booking).values(payload=payload))

    assert h.work(cancel) == Status.CANCELLED
    assert list(h.cancel_calls("eguma").values()) == [2]


def test_fourvenues_says_it_refunded_and_takes_an_amount(h: Harness) -> None:
    _issued(h, "fourvenues")
    cancel = h.cancel("fourvenues", "C-1", "BK-1", payload={"amount": 7})

    assert h.work(cancel) == Status.CANCELLED

    (result,) = h.results(cancel)
    assert result.error is not None and result.error.type == "refunded_not_voided"
    assert "documents no void" in result.error.message and "7 each" in result.error.message
    tickets = h.sandbox.ground_truth()["fourvenues"]["issued"]
    assert {t["status"] for t in tickets} == {"refunded"}
    for t in tickets:  # refunded the amount asked for, once
        shown = h.sandbox.handle(
            httpx.Request(
                "GET",
                f"http://sandbox/fourvenues/integrations/tickets/{t['id']}",
                headers={"x-api-key": "sandbox-key"},
            )
        ).json()["data"]
        assert shown["refunded"] == 7


def test_fourvenues_refunds_what_was_paid_by_default(h: Harness) -> None:
    _issued(h, "fourvenues")
    assert h.work(h.cancel("fourvenues", "C-1", "BK-1")) == Status.CANCELLED
    for t in h.sandbox.ground_truth()["fourvenues"]["issued"]:
        shown = h.sandbox.handle(
            httpx.Request(
                "GET",
                f"http://sandbox/fourvenues/integrations/tickets/{t['id']}",
                headers={"x-api-key": "sandbox-key"},
            )
        ).json()["data"]
        assert shown["refunded"] == shown["total_paid"] > 0


def test_fourvenues_channels_refusal_is_failed_with_the_reason(h: Harness) -> None:
    booking = _issued(h, "fourvenues_channels")
    cancel = h.cancel("fourvenues_channels", "C-1", "BK-1", payload={"amount": 100000})

    assert h.work(cancel) == Status.FAILED

    assert "exceeds" in (h.row(cancel).error_message or "")
    assert h.row(booking).status == Status.ISSUED


def test_a_failed_booking_its_producer_cancelled_is_never_redriven_by_a_reissue(h: Harness) -> None:
    h.sandbox.set_faults("remypass", fail_next=[{"status": 400}])
    booking = h.book("remypass", "BK-3")
    other = h.book("remypass", "BK-4")
    assert h.work(booking) == Status.FAILED
    h.sandbox.set_faults("remypass", fail_next=[{"status": 400}])
    assert h.work(other) == Status.FAILED
    assert h.work(h.cancel("remypass", "C-3", "BK-3")) == Status.CANCELLED
    # The nightly re-issuance re-drives failed rows: never the one whose booking was cancelled.
    assert not ledger.requeue_for_run(h.deps.engine, booking, Status.FAILED.value, "run-1")
    assert h.row(booking).status == Status.FAILED
    assert ledger.requeue_for_run(h.deps.engine, other, Status.FAILED.value, "run-1")
