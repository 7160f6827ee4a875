"""RemyPass simulator against its documentation: auth, validation, duplicates, passes."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
from sandbox_calls import RP, remypass

from worker.devtools.sandbox import Sandbox
from worker.devtools.sandbox.samples import sample_payload


def test_create_answers_201_with_the_pass_instance(client: httpx.Client, sandbox: Sandbox) -> None:
    resp = remypass(client)
    assert resp.status_code == 201
    body = resp.json()
    assert body["success"] is True and isinstance(body["message"], str)
    instance = body["data"]["passInstance"]
    assert instance["status"] == "active"
    assert instance["recipientEmail"] == "jane.roe1@example.com"
    assert set(instance["walletUrls"]) == {"apple", "google"}
    truth = sandbox.ground_truth()["remypass"]
    assert truth["creations"] == {"BOOKING-1": 1}
    assert truth["issued"] == [
        {
            "id": instance["_id"],
            "code": instance["serialNumber"],
            "account": "default",
            "identity": "BOOKING-1",
            "status": "active",
        }
    ]


def test_issue_alias_and_bearer_auth(client: httpx.Client, sandbox: Sandbox) -> None:
    assert remypass(client, path="/event-tickets/issue", bearer=True).status_code == 201
    truth = sandbox.ground_truth()["remypass"]
    assert truth["routes"] == {"POST /api/v1/public/event-tickets/issue": 1}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic sandbox-key"}, 401),
        ({"X-API-Key": "sandbox-no-permission"}, 403),
        ({"Authorization": "Bearer sandbox-no-permission"}, 403),
    ],
)
def test_auth_failures(client: httpx.Client, sandbox: Sandbox, headers: dict[str, str], status: int) -> None:
    resp = client.post(
        RP + "/event-tickets/create-from-booking", json=sample_payload("remypass"), headers=headers
    )
    assert resp.status_code == status
    assert resp.json()["success"] is False
    assert sandbox.ground_truth()["remypass"]["tickets"] == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: p.pop("bookingId"), "bookingId"),
        (lambda p: p.pop("film"), "film"),
        (lambda p: p.pop("seat"), "seat"),
        (lambda p: p.pop("row"), "row"),
        (lambda p: p.pop("screen"), "screen"),
        (lambda p: p.pop("customer"), "customer"),
        (lambda p: p.update(startTime="2026-12-25"), "startTime"),
        (lambda p: p.update(startTime="25.12.2026 19:30"), "startTime"),
        (lambda p: p.update(sendEmail="yes"), "sendEmail"),
        (lambda p: p.update(bookingId=12345), "bookingId"),
        (lambda p: p.update(customer="Jane"), "customer"),
    ],
)
def test_validation_names_the_field(client: httpx.Client, sandbox: Sandbox, change: Any, field: str) -> None:
    payload = sample_payload("remypass")
    change(payload)
    resp = remypass(client, payload)
    assert resp.status_code == 400
    assert field in resp.json()["message"]
    assert sandbox.ground_truth()["remypass"]["tickets"] == 0


def test_what_the_docs_do_not_constrain_is_accepted(client: httpx.Client) -> None:
    payload = sample_payload("remypass")
    payload["customer"] = {"name": "Only A Name"}  # sub-fields are not documented
    payload.pop("sendEmail")
    payload["startTime"] = "2026-12-25T19:30:00+01:00"
    assert remypass(client, payload).status_code == 201


def test_invalid_json_is_a_400(client: httpx.Client) -> None:
    resp = client.post(
        RP + "/event-tickets/create-from-booking", content=b"{nope", headers={"X-API-Key": "sandbox-key"}
    )
    assert resp.status_code == 400 and resp.json()["success"] is False


def test_duplicate_default_400_unique_wording_without_the_pass(
    client: httpx.Client, sandbox: Sandbox
) -> None:
    assert remypass(client).status_code == 201
    resp = remypass(client)
    assert resp.status_code == 400
    assert resp.json() == {"success": False, "message": "bookingId must be unique"}
    assert sandbox.ground_truth()["remypass"]["creations"] == {"BOOKING-1": 1}


@pytest.mark.parametrize(
    ("wording", "text"),
    [
        ("must_be_unique", "bookingId must be unique"),
        ("already_exists", "A booking with this bookingId already exists"),
        ("duplicate", "Duplicate bookingId"),
    ],
)
def test_duplicate_wording_switch(client: httpx.Client, sandbox: Sandbox, wording: str, text: str) -> None:
    sandbox.set_switches("remypass", duplicate_message=wording, duplicate_status=409)
    remypass(client)
    resp = remypass(client)
    assert resp.status_code == 409
    assert resp.json()["message"] == text


def test_duplicate_can_return_the_existing_pass(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("remypass", duplicate_returns_pass="yes")
    first = remypass(client).json()["data"]["passInstance"]
    again = remypass(client).json()
    assert again["success"] is False
    assert again["data"]["passInstance"]["_id"] == first["_id"]


def test_bookingid_is_unique_per_account(client: httpx.Client, sandbox: Sandbox) -> None:
    assert remypass(client).status_code == 201
    assert remypass(client, key="sandbox-key-2").status_code == 201
    assert sandbox.ground_truth()["remypass"]["creations"] == {"BOOKING-1": 2}


def test_concurrent_same_bookingid_gives_one_201(sandbox: Sandbox) -> None:
    sandbox.set_faults("remypass", latency_ms=100)
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(transport=httpx.MockTransport(sandbox.handle), base_url="http://s") as c:
            statuses.append(remypass(c).status_code)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 400, 400, 400]
    assert sandbox.ground_truth()["remypass"]["creations"] == {"BOOKING-1": 1}


def test_template_reused_per_film_and_start(client: httpx.Client) -> None:
    a = remypass(client, sample_payload("remypass", 1)).json()["data"]
    b = remypass(client, sample_payload("remypass", 2)).json()["data"]
    other = sample_payload("remypass", 3)
    other["film"] = "Another film"
    c = remypass(client, other).json()["data"]
    assert a["passInstance"]["pass"] == b["passInstance"]["pass"] != c["passInstance"]["pass"]


def test_send_email_is_counted(client: httpx.Client, sandbox: Sandbox) -> None:
    payload = sample_payload("remypass")
    payload["sendEmail"] = True
    remypass(client, payload)
    remypass(client, sample_payload("remypass", 2))
    assert sandbox.ground_truth()["remypass"]["emails_sent"] == 1


def test_get_pass_and_404(client: httpx.Client) -> None:
    instance = remypass(client).json()["data"]["passInstance"]
    h = {"X-API-Key": "sandbox-key"}
    got = client.get(f"{RP}/passes/{instance['_id']}", headers=h)
    assert got.status_code == 200 and got.json()["data"]["_id"] == instance["_id"]
    missing = client.get(f"{RP}/passes/000000000000000000000000", headers=h)
    assert missing.status_code == 404 and missing.json()["success"] is False
    other_account = client.get(f"{RP}/passes/{instance['_id']}", headers={"X-API-Key": "sandbox-key-2"})
    assert other_account.status_code == 404


def test_revoke_is_permanent_and_counted(client: httpx.Client, sandbox: Sandbox) -> None:
    instance = remypass(client).json()["data"]["passInstance"]
    h = {"X-API-Key": "sandbox-key"}
    for _ in range(2):
        resp = client.post(f"{RP}/passes/{instance['_id']}/revoke", headers=h)
        assert resp.status_code == 200 and resp.json()["success"] is True
    assert client.get(f"{RP}/passes/{instance['_id']}", headers=h).json()["data"]["status"] == "void"
    truth = sandbox.ground_truth()["remypass"]
    assert truth["cancel_calls"] == {instance["_id"]: 2}
    assert truth["issued"][0]["status"] == "voided"
    assert client.post(f"{RP}/passes/nope/revoke", headers=h).status_code == 404


def test_list_passes_pagination_void_and_order(client: httpx.Client, sandbox: Sandbox) -> None:
    ids = [
        remypass(client, sample_payload("remypass", n)).json()["data"]["passInstance"]["_id"]
        for n in range(3)
    ]
    h = {"X-API-Key": "sandbox-key"}
    client.post(f"{RP}/passes/{ids[1]}/revoke", headers=h)
    page = client.get(f"{RP}/passes", params={"limit": 1}, headers=h).json()
    assert [p["_id"] for p in page["data"]] == [ids[0]]
    assert page["pagination"] == {
        "currentPage": 1,
        "totalPages": 2,
        "totalItems": 2,
        "itemsPerPage": 1,
        "hasNextPage": True,
        "hasPrevPage": False,
    }
    everything = client.get(f"{RP}/passes", params={"includeVoid": "true"}, headers=h).json()
    assert [p["_id"] for p in everything["data"]] == ids
    voided = client.get(f"{RP}/passes", params={"status": "void"}, headers=h).json()
    assert [p["_id"] for p in voided["data"]] == [ids[1]]
    sandbox.set_switches("remypass", passes_order="newest_first")
    newest = client.get(f"{RP}/passes", headers=h).json()
    assert [p["_id"] for p in newest["data"]] == [ids[2], ids[0]]
    for bad in ({"limit": "101"}, {"limit": "0"}, {"page": "0"}, {"status": "gone"}):
        assert client.get(f"{RP}/passes", params=bad, headers=h).status_code == 400


def test_unknown_route_is_html_404(client: httpx.Client) -> None:
    resp = client.get(f"{RP}/bookings/BOOKING-1", headers={"X-API-Key": "sandbox-key"})
    assert resp.status_code == 404
    assert resp.headers["content-type"].startswith("text/html")
    assert "Cannot GET" in resp.text
