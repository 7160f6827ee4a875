"""Fourvenues channels-service adapter against the in-process simulator."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from provider_helpers import account, make_attempt, next_attempt

from worker.devtools.sandbox import Sandbox
from worker.providers import get_provider
from worker.providers.base import OutcomeKind, derive_qr_code

channels = get_provider("fourvenues_channels")


def wrapped(sandbox: Sandbox, override: Callable[[httpx.Request], httpx.Response | None]) -> httpx.Client:
    """The sandbox, except where `override` answers."""

    def handler(request: httpx.Request) -> httpx.Response:
        return override(request) or sandbox.handle(request)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_tickets_are_normalised(client: httpx.Client, sandbox: Sandbox) -> None:
    attempt = make_attempt("fourvenues_channels", tickets=2)
    outcome = channels.issue(client, attempt)
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert [t.code for t in outcome.tickets] == [derive_qr_code(attempt.idempotency_key, i) for i in range(2)]
    assert all(t.ticket_id and t.category == "Early Bird" for t in outcome.tickets)
    assert sandbox.ground_truth()["fourvenues_channels"]["tickets"] == 2


def test_in_doubt_lookup_confirms(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults(
        "fourvenues_channels", accept_duplicate_qr=True, fail_next=[{"kind": "drop_after_create"}]
    )
    attempt = make_attempt("fourvenues_channels")
    lost = channels.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = channels.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert outcome.tickets[0].ticket_id is not None
    assert sandbox.ground_truth()["fourvenues_channels"]["tickets"] == 1


def test_in_doubt_nothing_listed_is_not_proof_and_sends_nothing(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    # GET /tickets's filters are undocumented: an empty list does not prove the filter was applied.
    outcome = channels.issue(client, make_attempt("fourvenues_channels", number=2, in_doubt=True))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert sandbox.ground_truth()["fourvenues_channels"]["tickets"] == 0


def _lookup_404(request: httpx.Request) -> httpx.Response | None:
    if request.method == "GET":
        return httpx.Response(404, json={"statusCode": 404, "message": "Cannot GET /tickets"})
    return None


def _filter_ignored(request: httpx.Request) -> httpx.Response | None:
    if request.method == "GET":
        return httpx.Response(200, json={"data": [{"_id": "x", "qr_code": "OTHER"}], "success": True})
    return None


@pytest.mark.parametrize("override", [_lookup_404, _filter_ignored])
def test_unusable_lookup_needs_review_and_sends_nothing(
    sandbox: Sandbox, override: Callable[[httpx.Request], httpx.Response | None]
) -> None:
    with wrapped(sandbox, override) as client:
        outcome = channels.issue(client, make_attempt("fourvenues_channels", number=2, in_doubt=True))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "unconfirmed"
    assert "settle at the provider" in outcome.error.message
    assert sandbox.ground_truth()["fourvenues_channels"]["requests"] == 0


def test_transient_lookup_error_is_retry_in_doubt(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("fourvenues_channels", fail_next=[{"status": 503}])
    outcome = channels.issue(client, make_attempt("fourvenues_channels", number=2, in_doubt=True))
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created


@pytest.mark.parametrize("message", ["must_be_unique", "already_exists", "duplicate"])
def test_duplicate_code_on_clean_attempt_is_failed(
    client: httpx.Client, sandbox: Sandbox, message: str
) -> None:
    sandbox.set_switches("fourvenues_channels", duplicate_qr="refuse", duplicate_qr_message=message)
    attempt = make_attempt("fourvenues_channels")
    assert channels.issue(client, attempt).kind is OutcomeKind.ISSUED
    outcome = channels.issue(client, make_attempt("fourvenues_channels", key=attempt.idempotency_key))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "duplicate"


def test_validation_and_auth(client: httpx.Client) -> None:
    bad = make_attempt("fourvenues_channels")
    bad.payload["tickets"][0]["personal_document_type"] = "library-card"
    outcome = channels.issue(client, bad)
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "validation_error"
    denied = channels.issue(
        client, make_attempt("fourvenues_channels", acct=account("fourvenues_channels", api_key="x"))
    )
    assert denied.error is not None and denied.error.type == "auth_error"


@pytest.mark.parametrize(
    ("fault", "may_have_created"),
    [
        ({"status": 500}, True),
        ({"status": 503}, True),
        ({"kind": "timeout"}, True),
        ({"status": 429, "retry_after": 5}, False),
    ],
)
def test_faults_are_retry(
    client: httpx.Client, sandbox: Sandbox, fault: dict[str, object], may_have_created: bool
) -> None:
    sandbox.set_faults("fourvenues_channels", fail_next=[fault])
    outcome = channels.issue(client, make_attempt("fourvenues_channels"))
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.may_have_created is may_have_created


def test_in_doubt_with_the_filter_applied_absence_is_proven_and_sent(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    sandbox.set_switches("fourvenues_channels", list_filters="applied")
    # The channel has a ticket: filtering by its code shows the filter works.
    assert channels.issue(client, make_attempt("fourvenues_channels", n=7)).kind is OutcomeKind.ISSUED
    sandbox.set_faults("fourvenues_channels", fail_next=[{"kind": "timeout"}])
    attempt = make_attempt("fourvenues_channels")
    lost = channels.issue(client, attempt)
    assert lost.kind is OutcomeKind.RETRY and lost.may_have_created
    outcome = channels.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert sandbox.ground_truth()["fourvenues_channels"]["tickets"] == 2


def test_in_doubt_with_the_filter_ignored_nothing_is_sent(client: httpx.Client, sandbox: Sandbox) -> None:
    assert channels.issue(client, make_attempt("fourvenues_channels", n=7)).kind is OutcomeKind.ISSUED
    sandbox.set_faults("fourvenues_channels", fail_next=[{"kind": "timeout"}])
    attempt = make_attempt("fourvenues_channels")
    channels.issue(client, attempt)
    outcome = channels.issue(client, next_attempt(attempt, True))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert sandbox.ground_truth()["fourvenues_channels"]["tickets"] == 1


@pytest.mark.parametrize("list_filters", ["ignored", "applied"])
@pytest.mark.parametrize("duplicate_qr", ["accept", "refuse"])
@pytest.mark.parametrize("fault", ["drop_after_create", "timeout"])
def test_every_reading_of_the_docs_never_issues_twice(
    sandbox: Sandbox, list_filters: str, duplicate_qr: str, fault: str
) -> None:
    sandbox.set_switches("fourvenues_channels", list_filters=list_filters, duplicate_qr=duplicate_qr)
    with httpx.Client(transport=httpx.MockTransport(sandbox.handle)) as client:
        assert channels.issue(client, make_attempt("fourvenues_channels", n=1)).kind is OutcomeKind.ISSUED
        sandbox.set_faults("fourvenues_channels", fail_next=[{"kind": fault}])
        attempt = make_attempt("fourvenues_channels", n=2, tickets=2)
        outcome = channels.issue(client, attempt)
        for _ in range(6):
            if outcome.kind is not OutcomeKind.RETRY:
                break
            attempt = next_attempt(attempt, outcome.may_have_created)
            outcome = channels.issue(client, attempt)
    truth = sandbox.ground_truth()["fourvenues_channels"]
    issued = {t["code"] for t in truth["issued"]}
    assert all(t.code in issued for t in outcome.tickets)
    assert set(truth["creations"].values()) == {1}
    created = fault == "drop_after_create"
    assert truth["tickets"] == (3 if created or outcome.kind is OutcomeKind.ISSUED else 1)
    if created:  # the tickets carry our codes: found in any listing
        assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    elif list_filters == "applied":  # absence proven through a code the channel has
        assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    else:
        assert outcome.kind is OutcomeKind.NEEDS_REVIEW
