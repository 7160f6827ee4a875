"""Fourvenues Integrations API adapter against the in-process simulator."""

from __future__ import annotations

import httpx
import pytest
from provider_helpers import account, make_attempt, next_attempt

from worker.devtools.sandbox import Sandbox
from worker.providers import get_provider
from worker.providers.base import OutcomeKind, derive_qr_code

fourvenues = get_provider("fourvenues")


def spy_client(sandbox: Sandbox, seen: list[httpx.Request]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return sandbox.handle(request)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_v2_tickets_with_derived_codes(sandbox: Sandbox) -> None:
    seen: list[httpx.Request] = []
    attempt = make_attempt("fourvenues", tickets=2)
    with spy_client(sandbox, seen) as client:
        outcome = fourvenues.issue(client, attempt)
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    codes = [derive_qr_code(attempt.idempotency_key, i) for i in range(2)]
    assert [t.code for t in outcome.tickets] == codes
    assert all(t.ticket_id and t.category == "General Access" and t.seat is None for t in outcome.tickets)
    assert outcome.provider_reference is not None  # the purchase's payment_id
    [request] = seen
    assert request.url.path == "/fourvenues/integrations/tickets/"
    assert request.headers["x-api-key"] == "sandbox-key"
    assert "integration_id" not in request.headers
    assert "qr_code" not in attempt.payload["tickets"][0]  # the stored payload is untouched
    assert sandbox.ground_truth()["fourvenues"]["creations"] == {c: 1 for c in codes}


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


def test_producer_qr_code_is_kept(client: httpx.Client) -> None:
    attempt = make_attempt("fourvenues")
    attempt.payload["tickets"][0]["qr_code"] = "PRODUCERCODE1"
    outcome = fourvenues.issue(client, attempt)
    assert outcome.tickets[0].code == "PRODUCERCODE1"


@pytest.mark.xfail(
    reason="the old simulator serves lookups outside /integrations and answers unknown routes with "
    "the not-found envelope; the rebuilt simulators replace it",
    strict=False,
)
def test_in_doubt_lookup_finds_tickets_and_sends_nothing(client: httpx.Client, sandbox: Sandbox) -> None:
    # Worst case: the simulated provider would accept a duplicate code.
    sandbox.set_faults("fourvenues", accept_duplicate_qr=True, fail_next=[{"kind": "drop_after_create"}])
    attempt = make_attempt("fourvenues", tickets=2)
    lost = fourvenues.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert [t.code for t in outcome.tickets] == [derive_qr_code(attempt.idempotency_key, i) for i in range(2)]
    truth = sandbox.ground_truth()["fourvenues"]
    assert set(truth["creations"].values()) == {1}
    assert truth["tickets"] == 2


def test_in_doubt_nothing_found_sends(client: httpx.Client, sandbox: Sandbox) -> None:
    # A clean booking first: its answer shows that the codes we send become the tickets' codes.
    assert fourvenues.issue(client, make_attempt("fourvenues", n=7)).kind is OutcomeKind.ISSUED
    sandbox.set_faults("fourvenues", fail_next=[{"kind": "timeout"}])
    attempt = make_attempt("fourvenues")
    lost = fourvenues.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 2


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


@pytest.mark.xfail(
    reason="the old simulator serves lookups outside /integrations and answers unknown routes with "
    "the not-found envelope; the rebuilt simulators replace it",
    strict=False,
)
def test_partially_found_needs_review(client: httpx.Client, sandbox: Sandbox) -> None:
    attempt = make_attempt("fourvenues", tickets=2)
    first_only = make_attempt("fourvenues", key=attempt.idempotency_key, tickets=1)
    assert fourvenues.issue(client, first_only).kind is OutcomeKind.ISSUED
    outcome = fourvenues.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "partial_issue"


def test_duplicate_code_on_first_attempt_is_failed(client: httpx.Client) -> None:
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
    assert "mutually exclusive" in outcome.error.message


def test_429_retry_after(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("fourvenues", fail_next=[{"status": 429, "retry_after": 3}])
    outcome = fourvenues.issue(client, make_attempt("fourvenues"))
    assert outcome.kind is OutcomeKind.RETRY and outcome.retry_after_s == 3
    assert outcome.may_have_created is False
