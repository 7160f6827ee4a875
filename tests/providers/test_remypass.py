"""RemyPass adapter against the in-process simulator."""

from __future__ import annotations

import httpx
import pytest
from provider_helpers import account, make_attempt, next_attempt, raising

from worker.devtools.sandbox import Sandbox
from worker.devtools.sandbox.core import NO_PERMISSION_KEY
from worker.providers import build_client, get_provider
from worker.providers.base import OutcomeKind

remypass = get_provider("remypass")


def test_created_pass_is_normalised(client: httpx.Client, sandbox: Sandbox) -> None:
    outcome = remypass.issue(client, make_attempt("remypass"))
    assert outcome.kind is OutcomeKind.ISSUED
    assert not outcome.reconciled
    [ticket] = outcome.tickets
    assert ticket.ticket_id is not None and ticket.ticket_id == outcome.provider_reference
    [pass_] = sandbox.ground_truth()["remypass"]["issued"]
    assert ticket.code == pass_["code"]  # the serialNumber
    assert ticket.seat == "A12"
    assert sandbox.ground_truth()["remypass"]["creations"] == {"BOOKING-1": 1}


def test_seat_label_combines_row_when_seat_lacks_it(client: httpx.Client) -> None:
    attempt = make_attempt("remypass")
    attempt.payload.update(row="10", seat="5")
    assert remypass.issue(client, attempt).tickets[0].seat == "10-5"


def test_bearer_auth_is_accepted_by_the_sandbox(client: httpx.Client) -> None:
    response = client.post(
        "http://sandbox.test/remypass/api/v1/public/event-tickets/issue",
        headers={"Authorization": "Bearer sandbox-key"},
        json=make_attempt("remypass", n=9).payload,
    )
    assert response.status_code == 201


def test_validation_error_is_failed(client: httpx.Client) -> None:
    attempt = make_attempt("remypass")
    del attempt.payload["film"]
    outcome = remypass.issue(client, attempt)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.http_status) == ("validation_error", 400)
    assert "film" in outcome.error.message


@pytest.mark.parametrize(("key", "status"), [("wrong-key", 401), (NO_PERMISSION_KEY, 403)])
def test_auth_errors_are_failed_and_loud(client: httpx.Client, key: str, status: int) -> None:
    acct = account("remypass", api_key=key)
    outcome = remypass.issue(client, make_attempt("remypass", acct=acct))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "auth_error"
    assert outcome.error.http_status == status
    assert "configuration problem" in outcome.error.message
    assert key not in outcome.error.message


def test_missing_key_fails_without_a_call(client: httpx.Client, sandbox: Sandbox) -> None:
    outcome = remypass.issue(client, make_attempt("remypass", acct=account("remypass", api_key=None)))
    assert outcome.kind is OutcomeKind.FAILED and outcome.error is not None
    assert outcome.error.type == "auth_error"
    assert sandbox.ground_truth()["remypass"]["requests"] == 0


@pytest.mark.parametrize(
    ("fault", "may_have_created", "type_"),
    [
        ({"status": 500}, True, "provider_error"),
        ({"status": 503}, True, "provider_unavailable"),
        ({"status": 429, "retry_after": 2}, False, "rate_limited"),
        ({"kind": "timeout"}, True, "timeout"),
        ({"kind": "drop_after_create"}, True, "network_error"),
    ],
)
def test_retryable_faults(
    client: httpx.Client,
    sandbox: Sandbox,
    fault: dict[str, object],
    may_have_created: bool,
    type_: str,
) -> None:
    sandbox.set_faults("remypass", fail_next=[fault])
    outcome = remypass.issue(client, make_attempt("remypass"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.error is not None and outcome.error.type == type_
    assert outcome.error.retryable
    assert outcome.may_have_created is may_have_created
    if fault.get("status") == 429:
        assert outcome.retry_after_s == 2


def test_connect_error_is_retry_not_created() -> None:
    with build_client(account("remypass"), transport=raising(httpx.ConnectError)) as client:
        outcome = remypass.issue(client, make_attempt("remypass"))
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created is False


def test_duplicate_after_lost_answer_is_reconciled(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("remypass", fail_next=[{"kind": "drop_after_create"}])
    first = make_attempt("remypass")
    lost = remypass.issue(client, first)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = remypass.issue(client, next_attempt(first, lost.may_have_created))
    assert outcome.kind is OutcomeKind.ISSUED
    assert outcome.reconciled
    assert outcome.error is None
    [ticket] = outcome.tickets  # one pass, its id and code unknown (no lookup by bookingId)
    assert (ticket.ticket_id, ticket.code, ticket.seat) == (None, None, "A12")
    assert sandbox.ground_truth()["remypass"]["creations"] == {"BOOKING-1": 1}


def test_duplicate_on_a_clean_first_attempt_is_failed(client: httpx.Client) -> None:
    assert remypass.issue(client, make_attempt("remypass", key="a")).kind is OutcomeKind.ISSUED
    # A different message reusing the same bookingId:
    outcome = remypass.issue(client, make_attempt("remypass", key="b"))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "duplicate"
    assert outcome.error.http_status == 400


def test_failure_after_unresolved_doubt_needs_review(client: httpx.Client) -> None:
    attempt = make_attempt("remypass", number=2, in_doubt=True, acct=account("remypass", api_key="x"))
    outcome = remypass.issue(client, attempt)
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "auth_error"


def test_created_without_a_readable_body_needs_review(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("remypass", fail_next=[{"kind": "malformed_after_create"}])
    outcome = remypass.issue(client, make_attempt("remypass"))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "malformed_response"


@pytest.mark.parametrize("status", [400, 409])
@pytest.mark.parametrize("message", ["must_be_unique", "already_exists", "duplicate"])
def test_every_duplicate_wording_is_recognised(
    client: httpx.Client, sandbox: Sandbox, status: int, message: str
) -> None:
    sandbox.set_switches("remypass", duplicate_status=status, duplicate_message=message)
    sandbox.set_faults("remypass", fail_next=[{"kind": "drop_after_create"}])
    first = make_attempt("remypass")
    lost = remypass.issue(client, first)
    outcome = remypass.issue(client, next_attempt(first, lost.may_have_created))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    other = remypass.issue(client, make_attempt("remypass", key="another-booking"))
    assert other.kind is OutcomeKind.FAILED and other.error is not None
    assert (other.error.type, other.error.http_status) == ("duplicate", status)
    assert sandbox.ground_truth()["remypass"]["creations"] == {"BOOKING-1": 1}


def test_a_429_first_does_not_make_a_duplicate_ours(client: httpx.Client, sandbox: Sandbox) -> None:
    assert remypass.issue(client, make_attempt("remypass", key="owner")).kind is OutcomeKind.ISSUED
    sandbox.set_faults("remypass", fail_next=[{"status": 429, "retry_after": 1}])
    attempt = make_attempt("remypass", key="late")
    limited = remypass.issue(client, attempt)
    assert limited.kind is OutcomeKind.RETRY and not limited.may_have_created
    outcome = remypass.issue(client, next_attempt(attempt, limited.may_have_created))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "duplicate"
