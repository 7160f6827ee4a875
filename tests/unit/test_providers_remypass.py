"""RemyPass adapter against scripted answers: the duplicate answer and the doubt."""

from __future__ import annotations

import httpx
import pytest
from provider_fakes import FakeProvider, attempt, remypass_payload

from worker.providers import get_provider
from worker.providers.base import OutcomeKind

remypass = get_provider("remypass")
CREATE = "/api/v1/public/event-tickets/create-from-booking"
CREATED = httpx.Response(
    201,
    json={"success": True, "message": "ok", "data": {"passInstance": {"_id": "p1", "serialNumber": "RP-1"}}},
)

WORDINGS = [
    "Duplicate bookingId",
    "A booking with this bookingId already exists",
    "bookingId already used",
    "bookingId must be unique",
    "This booking ID has already been used",
    "duplicate key error: bookingId",
]


def duplicate(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"success": False, "message": message})


@pytest.mark.parametrize("status", [400, 409])
@pytest.mark.parametrize("message", WORDINGS)
def test_duplicate_after_an_attempt_that_may_have_arrived_is_issued_reconciled(
    status: int, message: str
) -> None:
    fake = FakeProvider().on("POST", CREATE, duplicate(status, message))
    with fake.client() as client:
        outcome = remypass.issue(client, attempt("remypass", remypass_payload(), number=2, in_doubt=True))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    [ticket] = outcome.tickets
    assert (ticket.ticket_id, ticket.code, ticket.seat) == (None, None, "A12")


@pytest.mark.parametrize("status", [400, 409])
@pytest.mark.parametrize("message", WORDINGS)
def test_duplicate_when_nothing_of_ours_can_have_arrived_is_failed(status: int, message: str) -> None:
    """Attempt 2 after a 429 or a connect error: not in doubt, so the bookingId is another's."""
    fake = FakeProvider().on("POST", CREATE, duplicate(status, message))
    with fake.client() as client:
        outcome = remypass.issue(client, attempt("remypass", remypass_payload(), number=2, in_doubt=False))
    assert outcome.kind is OutcomeKind.FAILED
    assert outcome.error is not None and outcome.error.type == "duplicate"
    assert "already used by another booking" in outcome.error.message


@pytest.mark.parametrize(
    "first",
    [httpx.Response(429, headers={"Retry-After": "1"}), httpx.ConnectError("refused")],
    ids=["429", "connect-error"],
)
def test_a_429_or_connect_error_first_does_not_make_a_later_duplicate_ours(
    first: httpx.Response | Exception,
) -> None:
    fake = FakeProvider().on("POST", CREATE, first, duplicate(400, "Duplicate bookingId"))
    with fake.client() as client:
        one = remypass.issue(client, attempt("remypass", remypass_payload(), key="k"))
        assert one.kind is OutcomeKind.RETRY and not one.may_have_created
        two = remypass.issue(
            client, attempt("remypass", remypass_payload(), key="k", number=2, in_doubt=one.may_have_created)
        )
    assert two.kind is OutcomeKind.FAILED
    assert two.error is not None and two.error.type == "duplicate"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_first_makes_the_duplicate_ours(status: int) -> None:
    fake = FakeProvider().on("POST", CREATE, httpx.Response(status), duplicate(400, "Duplicate bookingId"))
    with fake.client() as client:
        one = remypass.issue(client, attempt("remypass", remypass_payload(), key="k"))
        assert one.kind is OutcomeKind.RETRY and one.may_have_created
        two = remypass.issue(
            client, attempt("remypass", remypass_payload(), key="k", number=2, in_doubt=True)
        )
    assert two.kind is OutcomeKind.ISSUED and two.reconciled


def test_a_validation_error_naming_bookingid_is_not_a_duplicate() -> None:
    fake = FakeProvider().on("POST", CREATE, duplicate(400, "bookingId must be a string"))
    with fake.client() as client:
        fresh = remypass.issue(client, attempt("remypass", remypass_payload()))
        doubtful = remypass.issue(client, attempt("remypass", remypass_payload(), number=2, in_doubt=True))
    assert fresh.kind is OutcomeKind.FAILED and fresh.error is not None
    assert fresh.error.type == "validation_error"
    # In doubt, a refusal does not prove that no pass exists.
    assert doubtful.kind is OutcomeKind.NEEDS_REVIEW


def test_created_pass_is_normalised_and_sent_with_the_key_header() -> None:
    fake = FakeProvider().on("POST", CREATE, CREATED)
    with fake.client() as client:
        outcome = remypass.issue(client, attempt("remypass", remypass_payload()))
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert [(t.ticket_id, t.code, t.seat) for t in outcome.tickets] == [("p1", "RP-1", "A12")]
    assert fake.requests[0].headers["x-api-key"] == "live-key-123456"


def test_a_duplicate_answer_carrying_the_pass_keeps_its_ids() -> None:
    body = {
        "success": False,
        "message": "bookingId must be unique",
        "data": {"passInstance": {"_id": "p9", "serialNumber": "RP-9"}},
    }
    fake = FakeProvider().on("POST", CREATE, httpx.Response(400, json=body))
    with fake.client() as client:
        outcome = remypass.issue(client, attempt("remypass", remypass_payload(), number=2, in_doubt=True))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert outcome.provider_reference == "p9"
    assert [(t.ticket_id, t.code) for t in outcome.tickets] == [("p9", "RP-9")]
