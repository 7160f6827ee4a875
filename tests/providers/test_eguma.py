"""e-guma adapter against the in-process simulator."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from provider_helpers import account, make_attempt, next_attempt

from worker.devtools.sandbox import Sandbox
from worker.providers import get_provider
from worker.providers.base import Attempt, Outcome, OutcomeKind

eguma = get_provider("eguma")


def test_booking_is_normalised_and_key_sent(sandbox: Sandbox) -> None:
    seen: list[httpx.Request] = []

    def spy(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sandbox.handle(request)

    attempt = make_attempt("eguma", tickets=2)
    with httpx.Client(transport=httpx.MockTransport(spy)) as client:
        outcome = eguma.issue(client, attempt)
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert outcome.provider_reference is not None
    assert len(outcome.tickets) == 2
    for ticket in outcome.tickets:
        assert ticket.ticket_id is None
        assert ticket.code is not None and len(ticket.code) == 19 and ticket.code.isdigit()
        assert ticket.category == "64ad1bb1973b861c040c99c1"
    [request] = seen
    assert request.headers["Idempotency-Key"] == attempt.idempotency_key
    assert request.url.params["apikey"] == "sandbox-key"
    assert request.url.path == "/eguma/v1/ticketing/booking.json"


def test_replay_gives_the_same_booking_and_one_creation(client: httpx.Client, sandbox: Sandbox) -> None:
    attempt = make_attempt("eguma")
    first = eguma.issue(client, attempt)
    second = eguma.issue(client, next_attempt(attempt, True))
    assert second.kind is OutcomeKind.ISSUED and second.reconciled
    assert second.provider_reference == first.provider_reference
    assert second.tickets == first.tickets
    assert sandbox.ground_truth()["eguma"]["creations"] == {attempt.idempotency_key: 1}


def test_lost_answer_then_retry_replays(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults(
        "eguma", fail_next=[{"kind": "drop_after_create"}, {"status": 502, "after_create": True}]
    )
    attempt = make_attempt("eguma")
    lost = eguma.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    again = eguma.issue(client, next_attempt(attempt, True))
    assert again.kind is OutcomeKind.RETRY and again.error is not None
    assert again.error.http_status == 502
    final = eguma.issue(client, next_attempt(next_attempt(attempt, True), True))
    assert final.kind is OutcomeKind.ISSUED and final.reconciled
    assert sandbox.ground_truth()["eguma"]["creations"] == {attempt.idempotency_key: 1}


def test_same_key_different_body_needs_review(client: httpx.Client, sandbox: Sandbox) -> None:
    attempt = make_attempt("eguma")
    assert eguma.issue(client, attempt).kind is OutcomeKind.ISSUED
    changed = make_attempt("eguma", key=attempt.idempotency_key, n=2, number=2, in_doubt=True)
    outcome = eguma.issue(client, changed)
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.http_status) == ("idempotency_mismatch", 422)
    assert sandbox.ground_truth()["eguma"]["tickets"] == 1


def test_same_key_in_flight_is_retry(sandbox: Sandbox) -> None:
    sandbox.set_faults("eguma", latency_ms=300)
    attempt = make_attempt("eguma")
    results: list[Outcome] = []
    transport = httpx.MockTransport(sandbox.handle)
    with httpx.Client(transport=transport) as client:
        slow = threading.Thread(target=lambda: results.append(eguma.issue(client, attempt)))
        slow.start()
        import time

        time.sleep(0.1)  # the first request is now inside the simulated latency
        sandbox.set_faults("eguma")
        second = eguma.issue(client, next_attempt(attempt, True))
        slow.join()
    assert second.kind is OutcomeKind.RETRY
    assert second.error is not None
    assert (second.error.type, second.error.http_status) == ("in_progress", 409)
    assert results[0].kind is OutcomeKind.ISSUED
    assert sandbox.ground_truth()["eguma"]["creations"] == {attempt.idempotency_key: 1}


def test_validation_error_is_failed(client: httpx.Client) -> None:
    attempt = make_attempt("eguma")
    attempt.payload["items"] = []
    outcome = eguma.issue(client, attempt)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "validation_error"
    assert outcome.error.http_status == 400 and "item" in outcome.error.message


def test_missing_idempotency_key_is_refused_by_the_sandbox(client: httpx.Client) -> None:
    response = client.post(
        "http://sandbox.test/eguma/v1/ticketing/booking.json",
        params={"apikey": "sandbox-key"},
        json=make_attempt("eguma").payload,
    )
    assert response.status_code == 400


def test_wrong_key_is_auth_error_and_never_echoes_the_key(client: httpx.Client) -> None:
    outcome = eguma.issue(client, make_attempt("eguma", acct=account("eguma", api_key="badkey99")))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "auth_error"
    assert outcome.error.http_status == 401
    assert "badkey99" not in outcome.error.message and "apikey" not in outcome.error.message


@pytest.mark.parametrize(
    ("fault", "kind", "may_have_created"),
    [
        ({"status": 500}, OutcomeKind.RETRY, True),
        ({"status": 503}, OutcomeKind.RETRY, True),
        ({"status": 429, "retry_after": 1}, OutcomeKind.RETRY, False),
        ({"kind": "timeout"}, OutcomeKind.RETRY, True),
        ({"kind": "malformed_after_create"}, OutcomeKind.RETRY, True),
    ],
)
def test_faults(
    client: httpx.Client,
    sandbox: Sandbox,
    fault: dict[str, object],
    kind: OutcomeKind,
    may_have_created: bool,
) -> None:
    sandbox.set_faults("eguma", fail_next=[fault])
    outcome = eguma.issue(client, make_attempt("eguma"))
    assert outcome.kind is kind
    assert outcome.may_have_created is may_have_created


def aged(attempt: Attempt, hours: float) -> Attempt:
    """The attempt as the sweeper would make it `hours` after the key's first call."""
    return dataclasses.replace(
        next_attempt(attempt, True), first_attempt_at=datetime.now(UTC) - timedelta(hours=hours)
    )


def test_past_72_hours_a_lost_booking_is_found_in_the_orders_not_booked_again(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    sandbox.set_faults("eguma", fail_next=[{"kind": "drop_after_create"}])
    attempt = make_attempt("eguma")
    lost = eguma.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    sandbox.advance_clock(73 * 3600)  # e-guma has forgotten the key
    outcome = eguma.issue(client, aged(attempt, 73))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert outcome.provider_reference is not None
    assert sandbox.ground_truth()["eguma"]["tickets"] == len(outcome.tickets)
    assert set(sandbox.ground_truth()["eguma"]["creations"].values()) == {1}


def test_past_72_hours_no_order_while_in_doubt_is_needs_review(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    sandbox.set_faults("eguma", fail_next=[{"kind": "timeout"}])  # before e-guma: nothing booked
    attempt = make_attempt("eguma")
    assert eguma.issue(client, attempt).may_have_created
    sandbox.advance_clock(73 * 3600)
    outcome = eguma.issue(client, aged(attempt, 73))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert sandbox.ground_truth()["eguma"]["tickets"] == 0


def test_a_replayed_5xx_never_ends_failed(client: httpx.Client, sandbox: Sandbox) -> None:
    """The booking was committed, then a 5xx was answered and stored: replayed for 72 hours."""
    sandbox.set_faults("eguma", fail_next=[{"status": 500, "after_create": True}])
    attempt = make_attempt("eguma")
    outcome = eguma.issue(client, attempt)
    for _ in range(5):
        assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
        attempt = next_attempt(attempt, True)
        outcome = eguma.issue(client, attempt)
    assert outcome.kind is OutcomeKind.RETRY  # in doubt to the end: the worker records needs_review
    assert set(sandbox.ground_truth()["eguma"]["creations"].values()) == {1}
