"""e-guma simulator against its documentation: the idempotency store and its 72-hour expiry on
the movable clock, reservations, cancellation, orders, validation."""

from __future__ import annotations

import re
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sandbox_calls import EG, eg_booking, eg_get, eguma

from worker.devtools.sandbox import Sandbox
from worker.devtools.sandbox.clock import EGUMA_ZONE

DAY_PASS = "64ad1bb1973b861c040c99be"
DAY_ADULT = "64ad1bb1973b861c040c99c4"


def _day_pass(day: str = "2027-06-01", quantity: int = 1) -> dict[str, Any]:
    body = eg_booking(starts_at=day)
    body.update(product_id=DAY_PASS, items=[{"category_id": DAY_ADULT, "quantity": quantity}])
    return body


def _creations(sandbox: Sandbox) -> dict[str, int]:
    out: dict[str, int] = sandbox.ground_truth()["eguma"]["creations"]
    return out


# ---- booking -------------------------------------------------------------------------------


def test_booking_answer_as_documented(client: httpx.Client, sandbox: Sandbox) -> None:
    resp = eguma(client, eg_booking())
    assert resp.status_code == 201
    body = resp.json()
    assert set(body) == {"booking_id", "booking_reference", "tickets", "language"}
    assert re.fullmatch(r"T\d+", body["booking_reference"])
    assert body["language"] == "de"  # the merchant's default, which the product offers
    assert len(body["tickets"]) == 2
    for ticket in body["tickets"]:
        assert re.fullmatch(r"\d{19}", ticket["ticket_number"])
        assert ticket["category_id"] == "64ad1bb1973b861c040c99c1"
    truth = sandbox.ground_truth()["eguma"]
    assert truth["creations"] == {"key-1": 1}
    assert {t["code"] for t in truth["issued"]} == {t["ticket_number"] for t in body["tickets"]}
    assert {t["booking"] for t in truth["issued"]} == {body["booking_id"]}


def test_create_status_switch(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("eguma", create_status=200)
    assert eguma(client).status_code == 200


@pytest.mark.parametrize("apikey", [None, "", "wrong"])
def test_api_key_required(client: httpx.Client, sandbox: Sandbox, apikey: str | None) -> None:
    resp = eguma(client, apikey=apikey)
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("text/plain") and resp.text
    sandbox.set_switches("eguma", error_format="json")
    assert eguma(client, apikey=apikey).json()["error"] == "unauthorized"
    assert _creations(sandbox) == {}


def test_idempotency_key_required(client: httpx.Client, sandbox: Sandbox) -> None:
    for idem in (None, "", "   "):
        resp = eguma(client, idem=idem)
        assert resp.status_code == 400 and "Idempotency-Key" in resp.text
    assert _creations(sandbox) == {}


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        (lambda p: p.update(product_id="nope"), 404, "Product"),
        (lambda p: p.pop("product_id"), 400, "product_id"),
        (lambda p: p.update(starts_at="2027-06-01T11:00:00"), 400, "availability"),
        (lambda p: p.update(starts_at="2027-06-01T10:00:00Z"), 400, "time zone"),
        (lambda p: p.update(starts_at="2027-06-01T10:00:00+01:00"), 400, "time zone"),
        (lambda p: p.update(starts_at="01.06.2027 10:00"), 400, "starts_at"),
        (lambda p: p.update(starts_at="2029-06-01T10:00:00"), 400, "availability"),
        (lambda p: p.update(items=[]), 400, "At least one item"),
        (lambda p: p.pop("items"), 400, "items"),
        (lambda p: p.update(items=[{"category_id": "nope", "quantity": 1}]), 400, "category_id"),
        (lambda p: p["items"].append(dict(p["items"][0])), 400, "more than once"),
        (lambda p: p["items"][0].update(quantity=-1), 400, "quantity"),
        (lambda p: p["items"][0].update(quantity=21), 400, "between 1 and 20"),
        (lambda p: p["items"][0].update(quantity="2"), 400, "quantity"),
        (lambda p: p.update(items=[{"category_id": "64ad1bb1973b861c040c99c3", "quantity": 0}]), 400, "0"),
        (
            lambda p: p.update(items=[{"category_id": "64ad1bb1973b861c040c99c3", "quantity": 5}]),
            400,
            "2 and 4",
        ),
        (lambda p: p["customer"].pop("last_name"), 400, "last_name"),
        (lambda p: p["customer"].pop("email"), 400, "email"),
        (lambda p: p.pop("customer"), 400, "customer"),
        (lambda p: p.update(language="it"), 400, "language"),
    ],
)
def test_validation(client: httpx.Client, sandbox: Sandbox, change: Any, status: int, words: str) -> None:
    payload = eg_booking()
    change(payload)
    resp = eguma(client, payload)
    assert resp.status_code == status, resp.text
    assert words in resp.text
    assert _creations(sandbox) == {}


def test_json_error_codes(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("eguma", error_format="json")
    bad = eg_booking(language="it")
    assert eguma(client, bad, idem="a").json()["error"] == "validation_error"
    assert eguma(client, eg_booking(product_id="nope"), idem="b").json()["error"] == "not_found"


def test_what_the_docs_allow(client: httpx.Client) -> None:
    zero_ok = eg_booking()
    zero_ok["items"].append({"category_id": "64ad1bb1973b861c040c99c2", "quantity": 0})
    assert eguma(client, zero_ok, idem="a").status_code == 201
    french = eguma(client, eg_booking(language="fr"), idem="b").json()
    assert french["language"] == "fr"
    for n, day in enumerate(("2027-06-01", "2027-06-02T00:00:00")):
        resp = eguma(client, _day_pass(day), idem=f"day-{n}")
        assert resp.status_code == 201, resp.text
        assert resp.json()["language"] == "en"  # the product's first language: no "de"
    assert eguma(client, _day_pass("2027-06-03T10:00:00"), idem="day-x").status_code == 400


def test_the_samples_are_accepted(client: httpx.Client) -> None:
    from worker.devtools.sandbox.samples import sample_payload

    assert eguma(client, sample_payload("eguma", 1, tickets=3)).status_code == 201


def test_closed_slots_accepted_unless_switched(client: httpx.Client, sandbox: Sandbox) -> None:
    past = eg_booking(starts_at="2026-03-19T10:00:00")  # the sample's slot, long past
    assert eguma(client, past, idem="a").status_code == 201
    sandbox.set_switches("eguma", closing_enforced="yes")
    resp = eguma(client, past, idem="b")
    assert resp.status_code == 400 and "closed" in resp.text
    assert eguma(client, eg_booking(), idem="c").status_code == 201


def test_sold_out(client: httpx.Client, sandbox: Sandbox) -> None:
    assert eguma(client, _day_pass(quantity=5), idem="a").status_code == 201
    resp = eguma(client, _day_pass(quantity=1), idem="b")
    assert resp.status_code == 409 and "left" in resp.text
    sandbox.set_switches("eguma", sold_out_status=422)
    assert eguma(client, _day_pass(quantity=1), idem="c").status_code == 422
    assert eguma(client, _day_pass("2027-06-02", quantity=1), idem="d").status_code == 201


# ---- idempotency ---------------------------------------------------------------------------


def test_same_key_same_body_replays(client: httpx.Client, sandbox: Sandbox) -> None:
    first = eguma(client, eg_booking())
    reordered = (
        b'{"customer": {"email": "jane.roe1@example.com", "last_name": "Roe", "first_name": "Jane"},\n'
    )
    reordered += b'"items": [{"quantity": 2, "category_id": "64ad1bb1973b861c040c99c1"}],'
    reordered += b'"starts_at": "2027-06-01T10:00:00", "product_id": "64ad1bb1973b861c040c99bd"}'
    again = eguma(client, content=reordered)
    assert again.status_code == first.status_code
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert _creations(sandbox) == {"key-1": 1}


@pytest.mark.parametrize("header", ["Idempotency-Replayed", "X-Idempotent-Replayed"])
def test_replay_header_switch(client: httpx.Client, sandbox: Sandbox, header: str) -> None:
    sandbox.set_switches("eguma", replay_header=header)
    eguma(client)
    assert eguma(client).headers[header] == "true"


@pytest.mark.parametrize(("switch", "status"), [(None, 422), (400, 400), (409, 409)])
def test_same_key_other_body_refused(
    client: httpx.Client, sandbox: Sandbox, switch: int | None, status: int
) -> None:
    if switch is not None:
        sandbox.set_switches("eguma", mismatch_status=switch)
    eguma(client, eg_booking(quantity=2))
    resp = eguma(client, eg_booking(quantity=3))
    assert resp.status_code == status and "different request body" in resp.text
    assert _creations(sandbox) == {"key-1": 1}


@pytest.mark.parametrize(("switch", "status"), [(None, 409), (429, 429)])
def test_key_in_flight_refused(sandbox: Sandbox, switch: int | None, status: int) -> None:
    if switch is not None:
        sandbox.set_switches("eguma", in_flight_status=switch)
    sandbox.set_faults("eguma", latency_ms=1000)
    results: dict[str, httpx.Response] = {}

    def call(name: str) -> None:
        with httpx.Client(transport=httpx.MockTransport(sandbox.handle), base_url="http://s") as c:
            results[name] = eguma(c, eg_booking())

    first = threading.Thread(target=call, args=("first",))
    first.start()
    deadline = time.monotonic() + 5
    while sandbox.ground_truth()["eguma"]["requests"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    call("second")
    first.join()
    # Whichever got in first books; the other is refused while it runs.
    booked, refused = sorted(results.values(), key=lambda r: r.status_code != 201)
    assert booked.status_code == 201
    assert refused.status_code == status and "still being processed" in refused.text
    assert _creations(sandbox) == {"key-1": 1}


def test_keys_are_per_merchant_not_per_user(client: httpx.Client, sandbox: Sandbox) -> None:
    first = eguma(client, eg_booking())
    colleague = eguma(client, eg_booking(), apikey="sandbox-key-colleague")  # same merchant
    assert colleague.content == first.content and colleague.headers["Idempotent-Replayed"] == "true"
    other = eguma(client, eg_booking(), apikey="sandbox-key-2")  # another merchant
    assert other.json()["booking_id"] != first.json()["booking_id"]
    assert _creations(sandbox) == {"key-1": 2}
    assert sandbox.ground_truth()["eguma"]["creations_by_request"] == {"key-1": 2}


def test_records_expire_72_hours_after_completion(client: httpx.Client, sandbox: Sandbox) -> None:
    first = eguma(client, eg_booking())
    sandbox.advance_clock(72 * 3600 - 5)
    assert eguma(client, eg_booking()).content == first.content
    assert _creations(sandbox) == {"key-1": 1}
    sandbox.advance_clock(10)
    second = eguma(client, eg_booking())
    assert second.status_code == 201 and "Idempotent-Replayed" not in second.headers
    assert second.json()["booking_id"] != first.json()["booking_id"]
    assert _creations(sandbox) == {"key-1": 2}  # a second booking: the documented danger


def test_failed_answers_replayed_by_default(client: httpx.Client, sandbox: Sandbox) -> None:
    bad = eg_booking(language="it")
    assert eguma(client, bad).status_code == 400
    again = eguma(client, bad)
    assert again.status_code == 400 and again.headers["Idempotent-Replayed"] == "true"
    assert eguma(client, eg_booking()).status_code == 422  # the key is used up


def test_failed_answers_released_by_switch(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("eguma", failures="release")
    assert eguma(client, eg_booking(language="it")).status_code == 400
    assert eguma(client, eg_booking()).status_code == 201
    assert _creations(sandbox) == {"key-1": 1}


def test_5xx_after_commit_is_replayed(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("eguma", fail_next=[{"status": 500, "after_create": True}])
    first = eguma(client, eg_booking())
    assert first.status_code == 500
    again = eguma(client, eg_booking())
    assert again.status_code == 500 and again.headers["Idempotent-Replayed"] == "true"
    assert _creations(sandbox) == {"key-1": 1}  # committed once; the key never says so
    orders = eg_get(client, "/orders.json", last_name="Roe").json()["orders"]
    assert len(orders) == 1 and orders[0]["status"] == "completed"


def test_5xx_after_commit_released_books_twice(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("eguma", failures="release")
    sandbox.set_faults("eguma", fail_next=[{"status": 500, "after_create": True}])
    assert eguma(client, eg_booking()).status_code == 500
    assert eguma(client, eg_booking()).status_code == 201
    assert _creations(sandbox) == {"key-1": 2}


def test_dropped_answer_replays_the_success(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("eguma", fail_next=[{"kind": "drop_after_create"}])
    with pytest.raises(httpx.RemoteProtocolError):
        eguma(client, eg_booking())
    again = eguma(client, eg_booking())
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert _creations(sandbox) == {"key-1": 1}


def test_gateway_errors_are_not_stored(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("eguma", fail_next=[{"status": 503}, {"kind": "timeout"}])
    assert eguma(client, eg_booking()).status_code == 503
    with pytest.raises(httpx.ReadTimeout):
        eguma(client, eg_booking())
    resp = eguma(client, eg_booking())
    assert resp.status_code == 201 and "Idempotent-Replayed" not in resp.headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/reservation.json", {"product_id": DAY_PASS, "starts_at": "2027-06-01", "items": []}),
        ("/cancel-booking.json", {"booking_id": "x"}),
        ("/cancel-reservation.json", {"reservation_id": "x"}),
    ],
)
def test_key_on_other_endpoints(
    client: httpx.Client, sandbox: Sandbox, path: str, body: dict[str, Any]
) -> None:
    resp = eguma(client, body, path=path, idem="k")
    assert resp.status_code == 400 and "Idempotency-Key" in resp.text
    sandbox.set_switches("eguma", key_on_other_endpoints="ignore")
    assert "Idempotency-Key" not in eguma(client, body, path=path, idem="k").text
    got = client.get(EG + "/orders.json", params={"apikey": "sandbox-key"}, headers={"Idempotency-Key": "k"})
    assert got.status_code == 200


def test_get_with_key_rejected_by_default(client: httpx.Client) -> None:
    got = client.get(EG + "/orders.json", params={"apikey": "sandbox-key"}, headers={"Idempotency-Key": "k"})
    assert got.status_code == 400


# ---- reservations --------------------------------------------------------------------------


def _reserve(client: httpx.Client, quantity: int = 2, day: str = "2027-06-01") -> httpx.Response:
    body = {
        "product_id": DAY_PASS,
        "starts_at": day,
        "items": [{"category_id": DAY_ADULT, "quantity": quantity}],
    }
    return eguma(client, body, path="/reservation.json", idem=None)


def test_reservation_holds_for_60_minutes(client: httpx.Client, sandbox: Sandbox) -> None:
    resp = _reserve(client)
    assert resp.status_code == 200
    body = resp.json()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}", body["expires_at"])
    expires = datetime.strptime(body["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")
    local_now = datetime.fromtimestamp(sandbox.now(), EGUMA_ZONE).replace(tzinfo=None)
    assert timedelta(minutes=59) < expires - local_now <= timedelta(minutes=60)
    booking = _day_pass(quantity=2)
    booking["reservation_id"] = body["reservation_id"]
    assert eguma(client, booking, idem="a").status_code == 201
    used = eguma(client, booking, idem="b")
    assert used.status_code == 400 and "already used" in used.text


def test_expired_unknown_cancelled_reservations(client: httpx.Client, sandbox: Sandbox) -> None:
    rid = _reserve(client).json()["reservation_id"]
    sandbox.advance_clock(61 * 60)
    booking = _day_pass(quantity=2)
    booking["reservation_id"] = rid
    expired = eguma(client, booking, idem="a")
    assert expired.status_code == 400 and "expired" in expired.text
    sandbox.set_switches("eguma", reservation_error_status=410)
    booking["reservation_id"] = "nope"
    unknown = eguma(client, booking, idem="b")
    assert unknown.status_code == 410 and "Unknown reservation_id" in unknown.text
    rid2 = _reserve(client).json()["reservation_id"]
    assert eguma(client, {"reservation_id": rid2}, path="/cancel-reservation.json", idem=None).json() == {
        "reservation_id": rid2
    }
    booking["reservation_id"] = rid2
    assert "cancelled" in eguma(client, booking, idem="c").text
    assert (
        eguma(client, {"reservation_id": "nope"}, path="/cancel-reservation.json", idem=None).status_code
        == 404
    )
    assert _creations(sandbox) == {}


def test_holds_take_capacity_until_they_expire(client: httpx.Client, sandbox: Sandbox) -> None:
    assert _reserve(client, quantity=5).status_code == 200
    assert _reserve(client, quantity=1).status_code == 409
    assert eguma(client, _day_pass(quantity=1), idem="a").status_code == 409
    sandbox.advance_clock(3601)
    assert eguma(client, _day_pass(quantity=1), idem="b").status_code == 201


def test_reservation_quantities_must_be_positive(client: httpx.Client) -> None:
    assert _reserve(client, quantity=0).status_code == 400


# ---- cancel --------------------------------------------------------------------------------


def _cancel(client: httpx.Client, booking_id: str, apikey: str = "sandbox-key") -> httpx.Response:
    return eguma(client, {"booking_id": booking_id}, path="/cancel-booking.json", idem=None, apikey=apikey)


def test_cancel_by_the_creating_key(client: httpx.Client, sandbox: Sandbox) -> None:
    booked = eguma(client, eg_booking()).json()
    assert _cancel(client, booked["booking_id"], "sandbox-key-colleague").status_code == 404
    assert _cancel(client, booked["booking_id"], "sandbox-key-2").status_code == 404
    resp = _cancel(client, booked["booking_id"])
    assert resp.status_code == 200
    assert resp.json() == {
        "booking_id": booked["booking_id"],
        "booking_reference": booked["booking_reference"],
        "cancelled_tickets": [{"ticket_number": t["ticket_number"]} for t in booked["tickets"]],
    }
    truth = sandbox.ground_truth()["eguma"]
    assert {t["status"] for t in truth["issued"]} == {"cancelled"}
    again = _cancel(client, booked["booking_id"])
    assert again.status_code == 400 and "already cancelled" in again.text
    assert truth["cancel_calls"] == {booked["booking_id"]: 3}
    assert _cancel(client, "nope").status_code == 404


def test_cancel_refused_after_start_or_check_in(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("eguma", cancel_refused_status=409)
    past = eguma(client, eg_booking(starts_at="2026-03-19T10:00:00"), idem="a").json()
    resp = _cancel(client, past["booking_id"])
    assert resp.status_code == 409 and "after the start" in resp.text
    scanned = eguma(client, eg_booking(), idem="b").json()
    sandbox.check_in("eguma", scanned["tickets"][1]["ticket_number"])
    assert "checked in" in _cancel(client, scanned["booking_id"]).text
    later = eguma(client, eg_booking(), idem="c").json()
    sandbox.advance_clock(3 * 365 * 86400)
    assert "after the start" in _cancel(client, later["booking_id"]).text
    with pytest.raises(ValueError):
        sandbox.check_in("eguma", "0000")


def test_cancel_frees_capacity(client: httpx.Client) -> None:
    booked = eguma(client, _day_pass(quantity=5), idem="a").json()
    assert eguma(client, _day_pass(quantity=1), idem="b").status_code == 409
    _cancel(client, booked["booking_id"])
    assert eguma(client, _day_pass(quantity=1), idem="c").status_code == 201


# ---- orders --------------------------------------------------------------------------------


def test_orders_list_created_and_cancelled(client: httpx.Client, sandbox: Sandbox) -> None:
    a = eguma(client, eg_booking(), idem="a").json()
    other = eg_booking()
    other["customer"]["last_name"] = "Smith"
    b = eguma(client, other, idem="b").json()
    eguma(client, eg_booking(), idem="c", apikey="sandbox-key-2")
    _cancel(client, b["booking_id"])
    orders = eg_get(client, "/orders.json").json()["orders"]
    assert [(o["id"], o["order_number"], o["status"]) for o in orders] == [
        (a["booking_id"], a["booking_reference"], "completed"),
        (b["booking_id"], b["booking_reference"], "cancelled"),
    ]
    assert [o["id"] for o in eg_get(client, "/orders.json", last_name="Smith").json()["orders"]] == [
        b["booking_id"]
    ]
    assert eg_get(client, "/orders.json", last_name="smith").json()["orders"] == []  # case-sensitive
    assert len(eg_get(client, "/orders.json", order_number=a["booking_reference"]).json()["orders"]) == 1
    assert "tickets" not in orders[0]["order_lines"][0]  # default: no ticket numbers
    sandbox.set_switches("eguma", orders_show_tickets="yes")
    lines = eg_get(client, "/orders.json", order_number=a["booking_reference"]).json()["orders"][0][
        "order_lines"
    ]
    assert [t["ticket_number"] for t in lines[0]["tickets"]] == [t["ticket_number"] for t in a["tickets"]]


def test_orders_updated_at_filters_and_zone(client: httpx.Client, sandbox: Sandbox) -> None:
    eguma(client, eg_booking(), idem="a")
    order = eg_get(client, "/orders.json").json()["orders"][0]
    local = datetime.fromtimestamp(sandbox.now(), EGUMA_ZONE).replace(tzinfo=None)
    stamp = datetime.strptime(order["updated_at"], "%Y-%m-%dT%H:%M:%S")
    assert abs((local - stamp).total_seconds()) < 5  # local time by default
    after = (stamp - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    before = (stamp - timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S")
    assert len(eg_get(client, "/orders.json", updated_at_after=after).json()["orders"]) == 1
    assert eg_get(client, "/orders.json", updated_at_before=before).json()["orders"] == []
    assert eg_get(client, "/orders.json", updated_at_after="yesterday").status_code == 400
    sandbox.set_switches("eguma", orders_time_zone="utc")
    utc_stamp = datetime.strptime(
        eg_get(client, "/orders.json").json()["orders"][0]["updated_at"], "%Y-%m-%dT%H:%M:%S"
    )
    offset = datetime.fromtimestamp(sandbox.now(), EGUMA_ZONE).utcoffset()
    assert offset is not None and stamp - utc_stamp == offset


# ---- catalogue -----------------------------------------------------------------------------


def test_products_and_availabilities(client: httpx.Client, sandbox: Sandbox) -> None:
    products = eg_get(client, "/products.json").json()["products"]
    assert {p["id"] for p in products} >= {"64ad1bb1973b861c040c99bd", DAY_PASS}
    got = eg_get(
        client, f"/products/{DAY_PASS}/availabilities.json", **{"from": "2027-06-01", "to": "2027-06-02"}
    )
    slots = got.json()["availabilities"]
    assert [s["starts_at"] for s in slots] == ["2027-06-01", "2027-06-02"]
    assert slots[0]["availability_count"] == 5
    assert (
        slots[0]["prices"][0]["min_quantity"] == 1 and slots[0]["prices"][0]["allow_zero_quantity"] is False
    )
    eguma(client, _day_pass(quantity=2), idem="a")
    again = eg_get(
        client, f"/products/{DAY_PASS}/availabilities.json", **{"from": "2027-06-01", "to": "2027-06-01"}
    )
    assert again.json()["availabilities"][0]["availability_count"] == 3
    timed = eg_get(
        client,
        "/products/64ad1bb1973b861c040c99bd/availabilities.json",
        **{"from": "2027-06-01", "to": "2027-06-01"},
    ).json()["availabilities"]
    assert [s["starts_at"] for s in timed] == ["2027-06-01T10:00:00", "2027-06-01T14:00:00"]
    assert timed[0]["availability_count"] is None  # unlimited
    assert eg_get(client, "/products/nope/availabilities.json").status_code == 404
    backwards = {"from": "2027-06-02", "to": "2027-06-01"}
    assert eg_get(client, f"/products/{DAY_PASS}/availabilities.json", **backwards).status_code == 400
