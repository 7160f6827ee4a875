"""Fourvenues Integrations API adapter against the in-process simulator, whose defaults are
the worst case the docs allow: a sent qr_code is ignored (the ticket gets a code of the
provider's own), a repeated qr_code is accepted, `data` is one object for several tickets."""

from __future__ import annotations

import httpx
import pytest
from provider_helpers import account, make_attempt, next_attempt

from worker.devtools.sandbox import Sandbox
from worker.providers import get_provider
from worker.providers.base import Attempt, Outcome, OutcomeKind

fourvenues = get_provider("fourvenues")


def spy_client(sandbox: Sandbox, seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sandbox.handle(request)

    return httpx.Client(transport=httpx.MockTransport(handler))


def issued_codes(sandbox: Sandbox) -> list[str]:
    return [t["code"] for t in sandbox.ground_truth()["fourvenues"]["issued"]]


def until_final(client: httpx.Client, attempt: Attempt, tries: int = 8) -> Outcome:
    """Attempt after attempt, as the worker would, until one is final (or the tries run out:
    the worker then records needs_review for a booking in doubt)."""
    outcome = fourvenues.issue(client, attempt)
    for _ in range(tries):
        if outcome.kind is not OutcomeKind.RETRY:
            return outcome
        attempt = next_attempt(attempt, outcome.may_have_created)
        outcome = fourvenues.issue(client, attempt)
    return outcome


def test_two_tickets_answered_as_one_object_are_all_confirmed(sandbox: Sandbox) -> None:
    seen: list[httpx.Request] = []
    attempt = make_attempt("fourvenues", tickets=2)
    with spy_client(sandbox, seen) as client:
        outcome = fourvenues.issue(client, attempt)
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    # Only codes the provider issued, never the ones we sent and it ignored.
    assert sorted(t.code or "" for t in outcome.tickets) == sorted(issued_codes(sandbox))
    assert len(outcome.tickets) == 2
    assert all(t.ticket_id and t.category == "General Access" and t.seat is None for t in outcome.tickets)
    assert outcome.provider_reference is not None  # the purchase's payment_id
    create = seen[0]
    assert create.method == "POST" and create.url.path == "/fourvenues/integrations/tickets/"
    assert create.headers["x-api-key"] == "sandbox-key"
    assert "integration_id" not in create.headers
    assert "qr_code" not in attempt.payload["tickets"][0]  # the stored payload is untouched
    assert set(sandbox.ground_truth()["fourvenues"]["creations"].values()) == {1}


def test_v1_auth_headers(sandbox: Sandbox) -> None:
    seen: list[httpx.Request] = []
    with spy_client(sandbox, seen) as client:
        outcome = fourvenues.issue(client, make_attempt("fourvenues", acct=account("fourvenues", "v1")))
    assert outcome.kind is OutcomeKind.ISSUED
    assert seen[0].headers["integration_id"] == "sandbox-integration"
    assert seen[0].headers["secret"] == "sandbox-secret"
    assert "x-api-key" not in seen[0].headers


def test_v1_wrong_secret_is_auth_error(client: httpx.Client) -> None:
    acct = account("fourvenues", "v1", secret="nope-nope")
    outcome = fourvenues.issue(client, make_attempt("fourvenues", acct=acct))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "auth_error"


def test_producer_qr_code_is_kept_where_the_provider_keeps_it(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    attempt = make_attempt("fourvenues")
    attempt.payload["tickets"][0]["qr_code"] = "PRODUCERCODE1"
    outcome = fourvenues.issue(client, attempt)
    assert [t.code for t in outcome.tickets] == ["PRODUCERCODE1"]


def test_lost_answer_with_codes_ignored_is_never_sent_again(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("fourvenues", fail_next=[{"kind": "drop_after_create"}])
    attempt = make_attempt("fourvenues", tickets=2)
    outcome = until_final(client, attempt)
    assert outcome.kind in (OutcomeKind.RETRY, OutcomeKind.NEEDS_REVIEW)  # in doubt to the end
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 2  # one booking, never a second
    assert sandbox.ground_truth()["fourvenues"]["routes"]["POST /integrations/tickets/"] == 1


def test_a_purchase_found_in_the_events_listing_is_named_for_review_not_taken(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    # An earlier booking of the same rate: its answer shows the event and that codes are ignored.
    assert fourvenues.issue(client, make_attempt("fourvenues", n=7)).kind is OutcomeKind.ISSUED
    sandbox.set_faults("fourvenues", fail_next=[{"kind": "drop_after_create"}])
    attempt = make_attempt("fourvenues", tickets=2)
    lost = fourvenues.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    # Names and emails cannot tell this booking from the same customer's other purchase: the
    # match is named for an operator, never reported as this booking's tickets.
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW and outcome.error is not None
    assert "payment" in outcome.error.message and outcome.tickets == []
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 3  # nothing sent again


def test_codes_kept_lost_answer_is_found_by_code(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    sandbox.set_faults("fourvenues", fail_next=[{"kind": "drop_after_create"}])
    attempt = make_attempt("fourvenues", tickets=2)
    lost = fourvenues.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert set(sandbox.ground_truth()["fourvenues"]["creations"].values()) == {1}
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 2


def test_codes_kept_and_nothing_created_sends_again(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    # A clean booking first: its answer shows that the codes we send become the tickets' codes.
    assert fourvenues.issue(client, make_attempt("fourvenues", n=7)).kind is OutcomeKind.ISSUED
    sandbox.set_faults("fourvenues", fail_next=[{"kind": "timeout"}])
    attempt = make_attempt("fourvenues")
    lost = fourvenues.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 2


def test_lookups_at_the_use_case_pages_path(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code", lookup_paths="code")
    sandbox.set_faults("fourvenues", fail_next=[{"kind": "drop_after_create"}])
    attempt = make_attempt("fourvenues")
    fourvenues.issue(client, attempt)
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 1


def test_a_wrong_base_url_never_leads_to_a_second_create(sandbox: Sandbox) -> None:
    acct = account("fourvenues", base_url="http://sandbox.test/fourvenues/wrong")
    with httpx.Client(transport=httpx.MockTransport(sandbox.handle)) as client:
        outcome = fourvenues.issue(client, make_attempt("fourvenues", number=2, in_doubt=True, acct=acct))
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
    assert outcome.error is not None and outcome.error.type == "lookup_unavailable"
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 0


@pytest.mark.parametrize("fault", [{"status": 503}, {"status": 500}, {"kind": "timeout"}])
def test_lookup_failure_is_retry_in_doubt(
    client: httpx.Client, sandbox: Sandbox, fault: dict[str, object]
) -> None:
    sandbox.set_faults("fourvenues", fail_next=[fault])
    outcome = fourvenues.issue(client, make_attempt("fourvenues", number=2, in_doubt=True))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.may_have_created is True  # still in doubt
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 0


def test_lookup_auth_failure_in_doubt_needs_review(client: httpx.Client) -> None:
    acct = account("fourvenues", api_key="revoked")
    outcome = fourvenues.issue(client, make_attempt("fourvenues", in_doubt=True, number=2, acct=acct))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "auth_error"


def test_partially_found_needs_review(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    attempt = make_attempt("fourvenues", tickets=2)
    first_only = make_attempt("fourvenues", key=attempt.idempotency_key, tickets=1)
    assert fourvenues.issue(client, first_only).kind is OutcomeKind.ISSUED
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "partial_issue"
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 1


@pytest.mark.parametrize("message", ["must_be_unique", "already_exists", "duplicate"])
def test_duplicate_code_on_first_attempt_is_failed(
    client: httpx.Client, sandbox: Sandbox, message: str
) -> None:
    sandbox.set_switches(
        "fourvenues", sent_qr_code="becomes_code", duplicate_qr="refuse", duplicate_qr_message=message
    )
    attempt = make_attempt("fourvenues")
    attempt.payload["tickets"][0]["qr_code"] = "TAKEN"
    assert fourvenues.issue(client, attempt).kind is OutcomeKind.ISSUED
    other = make_attempt("fourvenues", n=2, payload=attempt.payload)
    outcome = fourvenues.issue(client, other)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "duplicate"


def test_validation_error(client: httpx.Client) -> None:
    attempt = make_attempt("fourvenues")
    attempt.payload["referral_id"] = "rfrl_1"  # with channel_id: never both
    outcome = fourvenues.issue(client, attempt)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "validation_error"
    assert "not both" in outcome.error.message


def test_429_retry_after(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("fourvenues", fail_next=[{"status": 429, "retry_after": 3}])
    outcome = fourvenues.issue(client, make_attempt("fourvenues"))
    assert outcome.kind is OutcomeKind.RETRY and outcome.retry_after_s == 3
    assert outcome.may_have_created is False


@pytest.mark.parametrize("sent_qr_code", ["ignored", "becomes_code"])
@pytest.mark.parametrize("quantity_rule", ["quantity", "tickets", "must_match"])
@pytest.mark.parametrize("data_shape", ["object", "list", "list_when_many"])
@pytest.mark.parametrize("create_status", ["200", "201"])
def test_every_reading_of_the_docs_reports_only_issued_codes_and_never_issues_twice(
    sandbox: Sandbox, sent_qr_code: str, quantity_rule: str, data_shape: str, create_status: str
) -> None:
    sandbox.set_switches(
        "fourvenues",
        sent_qr_code=sent_qr_code,
        quantity_rule=quantity_rule,
        data_shape=data_shape,
        create_status=int(create_status),
    )
    with httpx.Client(transport=httpx.MockTransport(sandbox.handle)) as client:
        clean = fourvenues.issue(client, make_attempt("fourvenues", n=1, tickets=2))
        assert clean.kind is OutcomeKind.ISSUED, clean.error
        assert len(clean.tickets) == 2
        sandbox.set_faults("fourvenues", fail_next=[{"kind": "drop_after_create"}])
        lost = until_final(client, make_attempt("fourvenues", n=2, tickets=2))
    issued = issued_codes(sandbox)
    for outcome in (clean, lost):
        assert all(t.code in issued for t in outcome.tickets)  # never a code of our own making
    truth = sandbox.ground_truth()["fourvenues"]
    assert truth["tickets"] == 4  # two bookings of two tickets: nothing issued twice
    assert truth["routes"]["POST /integrations/tickets/"] == 2
    # Where sent codes are kept the lost booking is found by code; where they are not, a match
    # in the event's listing is only named for review.
    if sent_qr_code == "becomes_code":
        assert lost.kind is OutcomeKind.ISSUED and lost.reconciled, lost.error
        assert len(lost.tickets) == 2
    else:
        assert lost.kind is OutcomeKind.NEEDS_REVIEW, lost
        assert lost.tickets == []


@pytest.mark.parametrize("kept", [True, None])
def test_an_account_that_declares_its_codes_kept_may_send_again_after_a_timeout(
    client: httpx.Client, sandbox: Sandbox, kept: bool | None
) -> None:
    # A fresh worker has seen no answer of this account yet: only the accounts file's
    # `qr_codes_kept = true` makes "not found by code" mean absent, so the booking whose first
    # request timed out before Fourvenues processed it is sent again; otherwise it waits.
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    sandbox.set_faults("fourvenues", fail_next=[{"kind": "timeout"}], timeout_sleep_s=0)
    attempt = make_attempt("fourvenues", tickets=2, acct=account("fourvenues", qr_codes_kept=kept))
    lost = fourvenues.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    truth = sandbox.ground_truth()["fourvenues"]
    if kept:
        assert outcome.kind is OutcomeKind.ISSUED, outcome.error
        assert truth["tickets"] == 2
    else:
        assert outcome.kind in (OutcomeKind.RETRY, OutcomeKind.NEEDS_REVIEW), outcome
        assert truth["tickets"] == 0
