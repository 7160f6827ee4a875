"""Fourvenues Integrations simulator against its documentation, every switch both ways."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_calls import FV, fourvenues, fv_headers, fv_payload

from worker.devtools.sandbox import Sandbox
from worker.devtools.sandbox.samples import sample_payload


def _codes(resp: httpx.Response) -> list[str]:
    data = resp.json()["data"]
    return [t["code"] for t in (data if isinstance(data, list) else [data])]


def _issued(sandbox: Sandbox) -> list[dict[str, Any]]:
    issued: list[dict[str, Any]] = sandbox.ground_truth()["fourvenues"]["issued"]
    return issued


# ---- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"x-api-key": "sandbox-key"}, 201),
        ({"integration_id": "sandbox-integration", "secret": "sandbox-secret"}, 201),
        # the docs' example sends all three headers: either auth suffices
        (
            {"x-api-key": "not-a-key", "integration_id": "sandbox-integration", "secret": "sandbox-secret"},
            201,
        ),
        ({}, 401),
        ({"x-api-key": "wrong"}, 401),
        ({"integration_id": "sandbox-integration", "secret": "wrong"}, 401),
        ({"integration_id": "sandbox-integration"}, 401),
        ({"x-api-key": "sandbox-no-permission"}, 403),
    ],
)
def test_auth_v1_and_v2(client: httpx.Client, headers: dict[str, str], status: int) -> None:
    resp = fourvenues(client, headers=headers or {"x-other": "1"})
    assert resp.status_code == status
    if status != 201:
        assert resp.json()["success"] is False


def test_auth_v1_switch(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", auth_v1="refused")
    v1 = {"integration_id": "sandbox-integration", "secret": "sandbox-secret"}
    assert fourvenues(client, headers=v1).status_code == 401
    assert fourvenues(client).status_code == 201


# ---- validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda p: p["tickets"][0].pop("email"), "email"),
        (lambda p: p["tickets"][0].pop("full_name"), "full_name"),
        (lambda p: p.update(tickets=[]), "tickets"),
        (lambda p: p.pop("tickets"), "tickets"),
        (lambda p: p.update(referral_id="rfrl_1"), "not both"),
        (lambda p: p["tickets"][1].update(price_id="price_002"), "priceId"),
        (lambda p: p.update(sale_type="box-office"), "sale_type"),
        (lambda p: p["tickets"][0].update(birthday="01/01/1990"), "birthday"),
        (lambda p: p["tickets"][0].update(total_price="50"), "total_price"),
        (lambda p: p.update(quantity=0), "quantity"),
        (lambda p: p.pop("ticket_rate_id"), "ticket_rate_id"),
    ],
)
def test_documented_rules(client: httpx.Client, sandbox: Sandbox, change: Any, words: str) -> None:
    payload = sample_payload("fourvenues", tickets=2)
    change(payload)
    resp = fourvenues(client, payload)
    assert resp.status_code == 400
    assert resp.json()["success"] is False and words in resp.json()["error"]
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 0


def test_unknown_rate_and_no_limits(client: httpx.Client) -> None:
    payload = sample_payload("fourvenues")
    payload["ticket_rate_id"] = "tkrt_nope"
    assert fourvenues(client, payload).status_code == 404
    # "does not check for rate, channel or any sort of limits": no capacity
    big = fv_payload(*[None] * 30)
    assert fourvenues(client, big).status_code == 201


def test_referral_alone_and_optional_fields_pass(client: httpx.Client) -> None:
    payload = sample_payload("fourvenues")
    payload.pop("channel_id")
    payload["referral_id"] = "rfrl_xyz789"
    payload.pop("sale_type")
    payload["tickets"][0].update(
        gender="male", birthday="1990-01-01", supplements=[{"supplement_id": "s", "price": 10}]
    )
    resp = fourvenues(client, payload)
    assert resp.status_code == 201
    assert resp.json()["data"]["total_paid"] == 60


# ---- codes, duplicates, quantity ----------------------------------------------------------


def test_sent_qr_code_is_ignored_by_default(client: httpx.Client, sandbox: Sandbox) -> None:
    resp = fourvenues(client, fv_payload("QR-A"))
    code = resp.json()["data"]["code"]
    assert code != "QR-A"
    found = client.get(f"{FV}/by-code/QR-A", headers=fv_headers())
    assert found.status_code == 404 and found.json() == {"success": False, "error": "Ticket not found"}
    assert client.get(f"{FV}/by-code/{code}", headers=fv_headers()).status_code == 200
    truth = sandbox.ground_truth()["fourvenues"]
    assert truth["creations"] == {"QR-A": 1}  # counted under the code the client sent
    assert [t["code"] for t in truth["issued"]] == [code]


def test_sent_qr_code_can_become_the_code(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    resp = fourvenues(client, fv_payload("QR-A"))
    assert resp.json()["data"]["code"] == "QR-A"
    got = client.get(f"{FV}/by-code/QR-A", headers=fv_headers())
    assert got.status_code == 200 and got.json()["data"]["_id"] == resp.json()["data"]["_id"]


def test_repeated_qr_code_accepted_by_default(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    first = fourvenues(client, fv_payload("QR-A"))
    second = fourvenues(client, fv_payload("QR-A"))
    assert second.status_code == 201
    truth = sandbox.ground_truth()["fourvenues"]
    assert truth["creations"] == {"QR-A": 2}
    assert [t["code"] for t in truth["issued"]] == ["QR-A", "QR-A"]
    # the lookup answers the oldest of the two
    got = client.get(f"{FV}/by-code/QR-A", headers=fv_headers()).json()["data"]
    assert got["_id"] == first.json()["data"]["_id"]


@pytest.mark.parametrize(
    ("wording", "text"),
    [
        ("must_be_unique", "qr_code must be unique"),
        ("already_exists", "A ticket with this qr_code already exists"),
        ("duplicate", "Duplicate qr_code"),
    ],
)
def test_repeated_qr_code_refused(client: httpx.Client, sandbox: Sandbox, wording: str, text: str) -> None:
    sandbox.set_switches(
        "fourvenues", sent_qr_code="becomes_code", duplicate_qr="refuse", duplicate_qr_message=wording
    )
    assert fourvenues(client, fv_payload("QR-A")).status_code == 201
    resp = fourvenues(client, fv_payload("QR-B", "QR-A"))
    assert resp.status_code == 400 and resp.json()["error"] == text
    # twice in one request is refused too, and nothing of a refused request is created
    assert fourvenues(client, fv_payload("QR-C", "QR-C")).status_code == 400
    assert sandbox.ground_truth()["fourvenues"]["creations"] == {"QR-A": 1}


def test_quantity_beyond_the_objects_gets_generated_codes(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code", data_shape="list")
    resp = fourvenues(client, fv_payload("QR-A", quantity=3))
    codes = _codes(resp)
    assert len(codes) == 3 and codes[0] == "QR-A"
    assert len(set(codes)) == 3
    truth = sandbox.ground_truth()["fourvenues"]
    assert truth["tickets"] == 3
    assert truth["creations"] == {c: 1 for c in codes}
    # the copies carry the last object's holder
    assert {t["email"] for t in resp.json()["data"]} == {"jane.roe1@example.com"}


def test_quantity_below_the_objects_uses_the_first(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    fourvenues(client, fv_payload("QR-A", "QR-B", quantity=1))
    assert sandbox.ground_truth()["fourvenues"]["creations"] == {"QR-A": 1}


def test_quantity_rule_tickets_and_must_match(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", quantity_rule="tickets", data_shape="list")
    assert len(_codes(fourvenues(client, fv_payload(None, quantity=5)))) == 1
    sandbox.set_switches("fourvenues", quantity_rule="must_match")
    resp = fourvenues(client, fv_payload(None, quantity=2))
    assert resp.status_code == 400 and "quantity" in resp.json()["error"]
    assert len(_codes(fourvenues(client, fv_payload(None, None)))) == 2


def test_data_shape_switch(client: httpx.Client, sandbox: Sandbox) -> None:
    two = fv_payload(None, None)
    assert isinstance(fourvenues(client, two).json()["data"], dict)  # default: one object
    assert sandbox.ground_truth()["fourvenues"]["tickets"] == 2
    sandbox.set_switches("fourvenues", data_shape="list")
    assert isinstance(fourvenues(client, fv_payload(None)).json()["data"], list)
    sandbox.set_switches("fourvenues", data_shape="list_when_many")
    assert isinstance(fourvenues(client, fv_payload(None)).json()["data"], dict)
    assert len(fourvenues(client, two).json()["data"]) == 2


def test_create_status_switch(client: httpx.Client, sandbox: Sandbox) -> None:
    assert fourvenues(client).status_code == 201
    sandbox.set_switches("fourvenues", create_status=200)
    assert fourvenues(client).status_code == 200


def test_ticket_fields_as_documented(client: httpx.Client) -> None:
    ticket = fourvenues(client).json()["data"]
    assert ticket["status"] == "activated"
    assert ticket["rate_id"] == "tkrt_12345" and ticket["rate_name"] == "General Access"
    assert ticket["name"] == "Jane Roe" and ticket["email"] == "jane.roe1@example.com"
    assert ticket["total_paid"] == 50 and ticket["total_fees"] == 5 and ticket["price"] == 45
    assert len(ticket["code"]) == 9 and ticket["event_id"]


# ---- lookups -----------------------------------------------------------------------------


def test_lookup_paths_switch(client: httpx.Client, sandbox: Sandbox) -> None:
    code = fourvenues(client).json()["data"]["code"]
    h = fv_headers()
    assert client.get(f"{FV}/by-code/{code}", headers=h).status_code == 200
    wrong = client.get(f"{FV}/code/{code}", headers=h)
    assert wrong.status_code == 404 and wrong.headers["content-type"].startswith("text/html")
    sandbox.set_switches("fourvenues", lookup_paths="code")
    assert client.get(f"{FV}/code/{code}", headers=h).status_code == 200
    assert "Cannot GET" in client.get(f"{FV}/by-code/{code}", headers=h).text
    sandbox.set_switches("fourvenues", lookup_paths="both")
    assert client.get(f"{FV}/code/{code}", headers=h).status_code == 200
    assert client.get(f"{FV}/by-code/{code}", headers=h).status_code == 200


def test_not_found_body_switch(client: httpx.Client, sandbox: Sandbox) -> None:
    h = fv_headers()
    assert client.get(f"{FV}/by-code/NOPE", headers=h).json() == {
        "success": False,
        "error": "Ticket not found",
    }
    sandbox.set_switches("fourvenues", error_key="message")
    assert client.get(f"{FV}/by-code/NOPE", headers=h).json() == {
        "success": False,
        "message": "Ticket not found",
    }
    assert fourvenues(client, {"tickets": []}).json()["message"]


def test_the_old_wrong_path_is_not_a_lookup(client: httpx.Client) -> None:
    """The bug the simulator must expose: /tickets/by-code without /integrations is no route."""
    code = fourvenues(client).json()["data"]["code"]
    for path in (f"/fourvenues/tickets/by-code/{code}", "/fourvenues/tickets/by-code/NOPE"):
        resp = client.get(path, headers=fv_headers())
        assert resp.status_code == 404
        assert not resp.headers["content-type"].startswith("application/json")
        with pytest.raises(ValueError):
            resp.json()


def test_lookups_are_per_account(client: httpx.Client) -> None:
    ticket = fourvenues(client).json()["data"]
    other = fv_headers("sandbox-key-2")
    assert client.get(f"{FV}/by-code/{ticket['code']}", headers=other).status_code == 404
    assert client.get(f"{FV}/{ticket['_id']}", headers=other).status_code == 404
    assert client.get(f"{FV}/{ticket['_id']}", headers=fv_headers()).json()["data"]["code"] == ticket["code"]


def test_list_by_event(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", data_shape="list")
    codes = _codes(fourvenues(client, fv_payload(None, None, None)))
    event = client.get(f"{FV}/by-code/{codes[0]}", headers=fv_headers()).json()["data"]["event_id"]
    h = fv_headers()
    listed = client.get(f"{FV}/", params={"event_id": event}, headers=h).json()
    assert listed["success"] is True and [t["code"] for t in listed["data"]] == codes
    page = client.get(f"{FV}/", params={"event_id": event, "limit": 2, "offset": 2}, headers=h).json()
    assert [t["code"] for t in page["data"]] == codes[2:]
    past = client.get(f"{FV}/", params={"event_id": event, "offset": 10}, headers=h).json()
    assert past["data"] == []
    assert client.get(f"{FV}/", params={"event_id": "other"}, headers=h).json()["data"] == []
    assert client.get(f"{FV}/", headers=h).status_code == 400
    assert client.get(f"{FV}/", params={"event_id": event, "limit": 1000}, headers=h).status_code == 400
    future = client.get(f"{FV}/", params={"event_id": event, "start_date": "2099-01-01"}, headers=h).json()
    assert future["data"] == []


# ---- refund ------------------------------------------------------------------------------


def test_refund_default_leaves_the_ticket_activated(client: httpx.Client, sandbox: Sandbox) -> None:
    ticket = fourvenues(client).json()["data"]
    h = fv_headers()
    resp = client.post(f"{FV}/refund/{ticket['_id']}", json={"amount": 50}, headers=h)
    assert resp.status_code == 200 and resp.json() == {"success": True}
    after = client.get(f"{FV}/{ticket['_id']}", headers=h).json()["data"]
    assert after["status"] == "activated" and after["refunded"] == 50
    truth = sandbox.ground_truth()["fourvenues"]
    assert truth["issued"][0]["status"] == "refunded"
    assert truth["cancel_calls"] == {ticket["_id"]: 1}


def test_refund_can_cancel(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues", refund_status="cancelled")
    ticket = fourvenues(client).json()["data"]
    client.post(f"{FV}/refund/{ticket['_id']}", json={"amount": 10}, headers=fv_headers())
    assert client.get(f"{FV}/{ticket['_id']}", headers=fv_headers()).json()["data"]["status"] == "cancelled"
    assert _issued(sandbox)[0]["status"] == "cancelled"


def test_refund_validation(client: httpx.Client, sandbox: Sandbox) -> None:
    ticket = fourvenues(client).json()["data"]
    h = fv_headers()
    assert client.post(f"{FV}/refund/{ticket['_id']}", json={}, headers=h).status_code == 400
    assert client.post(f"{FV}/refund/{ticket['_id']}", json={"amount": "10"}, headers=h).status_code == 400
    assert client.post(f"{FV}/refund/nope", json={"amount": 10}, headers=h).status_code == 404
    assert _issued(sandbox)[0]["status"] == "active"
