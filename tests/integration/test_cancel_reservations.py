"""e-guma reservations (issue 13, point 5): a payload's reservation_id is booked against that
hold, sent as is; a hold that expired (60 minutes on the simulator's clock), was used or was
cancelled ends `failed` with e-guma's reason, whatever status e-guma gives the refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import redis
from sqlalchemy import Engine

from schemas.statuses import Status
from tests.helpers import envelope
from tests.integration.cancel_harness import Harness

EGUMA = "http://sandbox/eguma/v1/ticketing"


@pytest.fixture
def h(engine: Engine, redis_client: redis.Redis) -> Iterator[Harness]:
    yield Harness(engine, redis_client)


def _reserve(h: Harness, payload: dict[str, object]) -> str:
    body = {k: payload[k] for k in ("product_id", "starts_at", "items")}
    answer = h.sandbox.handle(
        httpx.Request("POST", f"{EGUMA}/reservation.json", params={"apikey": "sandbox-key"}, json=body)
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["reservation_id"])


def _book_with_hold(h: Harness, mid: str, reservation_id: str) -> str:
    env = envelope("eguma", mid)
    env["payload"]["reservation_id"] = reservation_id
    return h.accept(env)


def test_a_booking_with_a_reservation_is_booked_against_that_hold(h: Harness) -> None:
    sent: list[dict[str, object]] = []
    inner = h.sandbox.handle

    def spy(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/booking.json"):
            sent.append(json.loads(request.content))
        return inner(request)

    h.sandbox.handle = spy  # type: ignore[method-assign]
    hold = _reserve(h, envelope("eguma", "x")["payload"])
    first = _book_with_hold(h, "BK-1", hold)

    assert h.work(first) == Status.ISSUED
    assert sent[0]["reservation_id"] == hold
    # The hold was consumed by that booking: it serves no other.
    again = _book_with_hold(h, "BK-2", hold)
    assert h.work(again) == Status.FAILED
    assert h.row(again).error_type == "reservation_refused"


@pytest.mark.parametrize("status", [400, 404, 409, 410, 422])
@pytest.mark.parametrize("error_format", ["text", "json"])
def test_an_expired_hold_is_a_clear_permanent_failure(h: Harness, status: int, error_format: str) -> None:
    h.sandbox.set_switches("eguma", reservation_error_status=status, error_format=error_format)
    hold = _reserve(h, envelope("eguma", "x")["payload"])
    h.sandbox.advance_clock(60 * 60 + 1)
    key = _book_with_hold(h, "BK-1", hold)

    assert h.work(key) == Status.FAILED

    row = h.row(key)
    assert row.attempts == 1  # permanent: not retried, not sent to review
    assert row.error_type == "reservation_refused" and row.http_status == status
    assert "expired" in (row.error_message or "") and "60 minutes" in (row.error_message or "")
    assert h.sandbox.ground_truth()["eguma"]["creations"] == {}
    (result,) = h.results(key)
    assert result.error is not None and not result.error.retryable


def test_a_hold_still_valid_after_59_minutes_books(h: Harness) -> None:
    hold = _reserve(h, envelope("eguma", "x")["payload"])
    h.sandbox.advance_clock(59 * 60)
    assert h.work(_book_with_hold(h, "BK-1", hold)) == Status.ISSUED


def test_a_cancelled_hold_is_refused_with_its_reason(h: Harness) -> None:
    hold = _reserve(h, envelope("eguma", "x")["payload"])
    h.sandbox.handle(
        httpx.Request(
            "POST",
            f"{EGUMA}/cancel-reservation.json",
            params={"apikey": "sandbox-key"},
            json={"reservation_id": hold},
        )
    )
    key = _book_with_hold(h, "BK-1", hold)
    assert h.work(key) == Status.FAILED
    assert "cancelled" in (h.row(key).error_message or "")


def test_other_refusals_are_not_taken_for_a_reservation_problem(h: Harness) -> None:
    # Without a reservation_id, an unknown product stays e-guma's plain not-found.
    key = h.book("eguma", "BK-1", product_id="000000000000000000000000")
    assert h.work(key) == Status.FAILED
    assert h.row(key).error_type == "not_found"
