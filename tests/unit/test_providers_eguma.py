"""e-guma adapter against scripted answers: the 72-hour key lifetime and refusals of a replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from provider_fakes import FakeProvider, attempt, eguma_payload

from worker.providers import get_provider
from worker.providers.base import OutcomeKind

eguma = get_provider("eguma")
BOOK = "/v1/ticketing/booking.json"
ORDERS = "/v1/ticketing/orders.json"
NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
BOOKED = httpx.Response(
    200,
    json={
        "booking_id": "b-1",
        "booking_reference": "T10015",
        "tickets": [{"ticket_number": "4666825950402448933", "category_id": "cat1"}] * 2,
    },
)


def order(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "b-1",
        "order_number": "T10015",
        "status": "completed",
        "created_at": (NOW - timedelta(hours=71, minutes=59)).strftime("%Y-%m-%dT%H:%M:%S"),
        "updated_at": (NOW - timedelta(hours=71, minutes=59)).strftime("%Y-%m-%dT%H:%M:%S"),
        "customer": {"first_name": "Jane", "last_name": "Roe", "email": "jane@example.com"},
        "order_lines": [{"product_id": "prod1", "starts_at": "2026-03-19T10:00:00", "quantity": 2}],
    }
    base.update(changes)
    return base


def orders(*found: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json=list(found))


def aged(hours: float, *, in_doubt: bool = True, number: int = 2, answered_5xx: bool = False) -> Any:
    return attempt(
        "eguma",
        eguma_payload(),
        number=number,
        in_doubt=in_doubt,
        key="7f2d9e4b-1c33-4fab-8a42-abcdef123456",
        first_attempt_at=NOW - timedelta(hours=hours),
        now=NOW,
        answered_5xx=answered_5xx,
    )


def test_within_the_key_lifetime_a_retry_replays_with_the_same_key_and_lists_nothing() -> None:
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, orders())
    with fake.client() as client:
        outcome = eguma.issue(client, aged(70.9))
    assert outcome.kind is OutcomeKind.ISSUED
    assert [r.url.path for r in fake.requests] == [BOOK]
    assert fake.requests[0].headers["idempotency-key"] == "7f2d9e4b-1c33-4fab-8a42-abcdef123456"


def test_past_the_line_a_matching_order_is_reconciled_without_a_send() -> None:
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, orders(order()))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(71.5))
    assert outcome.kind is OutcomeKind.ISSUED and outcome.reconciled
    assert outcome.provider_reference == "b-1"
    assert [t.category for t in outcome.tickets] == ["cat1", "cat1"]
    assert fake.calls("POST") == []
    [lookup] = fake.requests
    assert lookup.url.params["last_name"] == "Roe"  # case-sensitive filter: exactly as booked
    assert lookup.url.params["apikey"] == "live-key-123456"
    assert "idempotency-key" not in lookup.headers  # only for endpoints that document it
    after = datetime.fromisoformat(lookup.url.params["updated_at_after"]).replace(tzinfo=UTC)
    before = datetime.fromisoformat(lookup.url.params["updated_at_before"]).replace(tzinfo=UTC)
    assert after <= NOW - timedelta(hours=71.5) and before >= NOW


def test_past_the_line_in_doubt_and_no_match_is_needs_review_never_a_send() -> None:
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, orders())
    with fake.client() as client:
        outcome = eguma.issue(client, aged(80))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert fake.calls("POST") == []


def test_past_the_line_not_in_doubt_sends_without_consulting_the_orders() -> None:
    """Only 429s and connect errors before: nothing of ours reached e-guma, so no booking of
    ours exists and the orders are not consulted (a match could only be the customer's other
    order)."""
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, orders(order()))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(80, in_doubt=False))
    assert outcome.kind is OutcomeKind.ISSUED and not outcome.reconciled
    assert [r.url.path for r in fake.requests] == [BOOK]


@pytest.mark.parametrize(
    ("found", "kind"),
    [
        ([order(customer={"first_name": "Jane", "last_name": "Roe", "email": "other@example.com"})], "none"),
        ([order(customer={"first_name": "Jane", "last_name": "ROE", "email": "jane@example.com"})], "none"),
        ([order(order_lines=[{"product_id": "other"}])], "none"),
        ([order(order_lines=[{"product_id": "prod1", "starts_at": "2026-03-20T10:00:00"}])], "none"),
        ([order(created_at="2026-11-01T10:00:00")], "none"),
        ([order(), order(id="b-2")], "ambiguous_order"),
        ([order(status="cancelled")], "cancelled_order"),
    ],
    ids=["other-email", "other-case", "other-product", "other-start", "too-old", "two", "cancelled"],
)
def test_past_the_line_only_our_booking_matches(found: list[dict[str, Any]], kind: str) -> None:
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, orders(*found))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(75))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None
    assert outcome.error.type == ("unconfirmed" if kind == "none" else kind)
    assert fake.calls("POST") == []


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(500, text="oops"),
        httpx.Response(404, text="<html></html>", headers={"content-type": "text/html"}),
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"unexpected": True}),
    ],
    ids=["500", "html-404", "not-json", "not-a-list"],
)
def test_past_the_line_an_unreadable_listing_retries_without_a_send(answer: httpx.Response) -> None:
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, answer)
    with fake.client() as client:
        outcome = eguma.issue(client, aged(75))
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created
    assert fake.calls("POST") == []


def test_the_first_attempt_never_lists_orders() -> None:
    fake = FakeProvider().on("POST", BOOK, BOOKED)
    with fake.client() as client:
        outcome = eguma.issue(client, aged(0, in_doubt=False, number=1))
    assert outcome.kind is OutcomeKind.ISSUED and [r.url.path for r in fake.requests] == [BOOK]


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (
            httpx.Response(400, json={"error": "validation_error", "message": "Idempotency key reused"}),
            "review",
        ),
        (httpx.Response(400, text="This key was already used with a different request"), "review"),
        (httpx.Response(409, json={"error": "conflict", "message": "request in progress"}), "retry"),
        (httpx.Response(422, json={"error": "unprocessable"}), "review"),
        (httpx.Response(400, json={"error": "validation_error", "message": "bad date"}), "review"),
    ],
    ids=["400-key", "400-text", "409", "422", "400-other"],
)
def test_a_refused_replay_while_in_doubt_is_never_failed(answer: httpx.Response, kind: str) -> None:
    fake = FakeProvider().on("POST", BOOK, answer)
    with fake.client() as client:
        outcome = eguma.issue(client, aged(1))
    expected = OutcomeKind.NEEDS_REVIEW if kind == "review" else OutcomeKind.RETRY
    assert outcome.kind is expected
    assert outcome.may_have_created


def test_a_400_naming_the_key_is_needs_review_even_on_a_first_attempt() -> None:
    fake = FakeProvider().on("POST", BOOK, httpx.Response(400, json={"message": "Idempotency-Key reused"}))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(0, in_doubt=False, number=1))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW
    assert outcome.error is not None and outcome.error.type == "idempotency_mismatch"


def test_a_plain_validation_error_on_a_first_attempt_is_failed() -> None:
    fake = FakeProvider().on("POST", BOOK, httpx.Response(400, json={"error": "validation_error"}))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(0, in_doubt=False, number=1))
    assert outcome.kind is OutcomeKind.FAILED


def test_503_is_in_doubt() -> None:
    fake = FakeProvider().on("POST", BOOK, httpx.Response(503))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(0, in_doubt=False, number=1))
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created


# --- after a 5xx answer, within the key's 72 h ---------------------------------------------
# Whether e-guma stores a failed answer or frees the key is not documented: a freed key would
# book again, so the orders are read before any send.


def recent(**changes: Any) -> dict[str, Any]:
    """An order made a minute after our first attempt."""
    made = (NOW - timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%S")
    return order(created_at=made, updated_at=made, **changes)


def test_after_a_5xx_no_matching_order_sends_again_with_the_same_key() -> None:
    other = recent(customer={"last_name": "Roe", "email": "someone.else@example.com"})  # not ours
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, orders(other))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(5 / 60, answered_5xx=True))
    assert outcome.kind is OutcomeKind.ISSUED
    assert [r.url.path for r in fake.requests] == [ORDERS, BOOK]
    assert fake.requests[1].headers["idempotency-key"] == "7f2d9e4b-1c33-4fab-8a42-abcdef123456"


def test_after_a_5xx_a_matching_order_is_needs_review_naming_it_and_never_a_send() -> None:
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, orders(recent()))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(5 / 60, answered_5xx=True))
    assert outcome.kind is OutcomeKind.NEEDS_REVIEW and not outcome.tickets
    assert outcome.error is not None and outcome.error.type == "failed_after_commit"
    assert "T10015" in outcome.error.message and "Roe" not in outcome.error.message
    assert fake.calls("POST") == []


def test_after_a_5xx_an_unreadable_listing_is_retried_and_nothing_is_sent() -> None:
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, httpx.Response(503, text="busy"))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(5 / 60, answered_5xx=True))
    assert outcome.kind is OutcomeKind.RETRY and outcome.may_have_created  # the doubt is kept
    # e-guma's own kind of error, so the circuit breaker counts an outage during the lookup.
    assert outcome.error is not None and outcome.error.type == "provider_unavailable"
    assert "orders lookup" in outcome.error.message and "re-sent" in outcome.error.message
    assert fake.calls("POST") == []


def test_a_lost_answer_without_a_5xx_trusts_the_key_replay_within_72_hours() -> None:
    """A dropped answer leaves the first answer stored: the key's replay is the proof, and the
    listing (which cannot tell our order from the customer's other one) is not read."""
    fake = FakeProvider().on("POST", BOOK, BOOKED).on("GET", ORDERS, orders(recent()))
    with fake.client() as client:
        outcome = eguma.issue(client, aged(5 / 60))
    assert outcome.kind is OutcomeKind.ISSUED
    assert [r.url.path for r in fake.requests] == [BOOK]
