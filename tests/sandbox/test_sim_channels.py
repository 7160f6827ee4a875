"""Fourvenues channels-service simulator against its documentation."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sandbox_calls import CH, ch_payload, channels

from worker.devtools.sandbox import Sandbox
from worker.devtools.sandbox.samples import sample_payload

H = {"X-Api-Key": "sandbox-key"}


def test_create_answers_a_list_with_the_sent_qr_code(client: httpx.Client, sandbox: Sandbox) -> None:
    resp = channels(client, ch_payload("QR-1", None))
    assert resp.status_code == 201
    body = resp.json()
    assert body["success"] is True and len(body["data"]) == 2
    first, second = body["data"]
    assert first["qr_code"] == "QR-1" and first["status"] == "active"
    assert second["qr_code"] and second["qr_code"] != "QR-1"  # generated when absent
    assert first["gender"] == 0 and first["payment_currency"] == "EUR"
    truth = sandbox.ground_truth()["fourvenues_channels"]
    assert truth["creations"] == {"QR-1": 1, second["qr_code"]: 1}
    assert {t["code"] for t in truth["issued"]} == {"QR-1", second["qr_code"]}


@pytest.mark.parametrize("headers", [{}, {"X-Api-Key": "wrong"}, {"Authorization": "Bearer sandbox-key"}])
def test_auth(client: httpx.Client, headers: dict[str, str]) -> None:
    resp = client.post(CH + "/tickets", json=sample_payload("fourvenues_channels"), headers=headers)
    assert resp.status_code == 401 and resp.json()["message"]


def test_auth_route(client: httpx.Client) -> None:
    data = client.get(CH + "/auth", headers=H).json()["data"]
    assert data["message"] == "Authed" and data["channel"]["hosts"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda p: p.update(tickets=[]), "tickets"),
        (lambda p: p.pop("ticket_rate_id"), "ticket_rate_id"),
        (lambda p: p["tickets"][0].pop("email"), "email"),  # required by this rate's settings
        (lambda p: p["tickets"][0].update(gender=2), "gender"),
        (lambda p: p["tickets"][0].update(personal_document_type="id"), "personal_document_type"),
        (lambda p: p["tickets"][0].update(birthday="1990"), "birthday"),
        (lambda p: p["tickets"][0].update(warranty={"enabled": "yes"}), "warranty"),
        (lambda p: p["tickets"][0].update(answers=[{"question_id": 1}]), "answers"),
        (lambda p: p.update(quantity="1"), "quantity"),
    ],
)
def test_validation(client: httpx.Client, sandbox: Sandbox, change: Any, words: str) -> None:
    payload = sample_payload("fourvenues_channels")
    change(payload)
    resp = channels(client, payload)
    assert resp.status_code == 400 and words in resp.json()["message"]
    assert sandbox.ground_truth()["fourvenues_channels"]["tickets"] == 0


def test_required_fields_follow_the_rate(client: httpx.Client) -> None:
    payload = sample_payload("fourvenues_channels")
    payload["ticket_rate_id"] = "5f8d0f8b9d2b3b0017b6d8a1"  # also requires phone
    assert "phone" in channels(client, payload).json()["message"]
    anonymous = {"quantity": 1, "ticket_rate_id": "5f8d0f8b9d2b3b0017b6d8a2", "tickets": [{"price_id": "p"}]}
    assert channels(client, anonymous).status_code == 201
    payload["ticket_rate_id"] = "no-such-rate"
    assert channels(client, payload).status_code == 404


def test_documented_example_fields_pass(client: httpx.Client) -> None:
    payload = sample_payload("fourvenues_channels")
    payload["tickets"][0].update(
        gender="0",
        personal_document_type="dni",
        birthday="1990-01-01",
        warranty={"enabled": True, "hours": 12},
        answers=[{"question_id": "1234567890", "answer": "Answer"}],
        supplements=[{"supplement_id": "1234567890", "price": 1}],
    )
    assert channels(client, payload).status_code == 201


def test_repeated_qr_code_accepted_by_default(client: httpx.Client, sandbox: Sandbox) -> None:
    channels(client, ch_payload("QR-1"))
    assert channels(client, ch_payload("QR-1")).status_code == 201
    assert sandbox.ground_truth()["fourvenues_channels"]["creations"] == {"QR-1": 2}


@pytest.mark.parametrize(
    ("wording", "text"),
    [("must_be_unique", "qr_code must be unique"), ("duplicate", "Duplicate qr_code")],
)
def test_repeated_qr_code_refused(client: httpx.Client, sandbox: Sandbox, wording: str, text: str) -> None:
    sandbox.set_switches("fourvenues_channels", duplicate_qr="refuse", duplicate_qr_message=wording)
    channels(client, ch_payload("QR-1"))
    resp = channels(client, ch_payload("QR-2", "QR-1"))
    assert resp.status_code == 400 and resp.json() == {"success": False, "message": text}
    assert sandbox.ground_truth()["fourvenues_channels"]["creations"] == {"QR-1": 1}


def test_qr_codes_are_per_channel(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues_channels", duplicate_qr="refuse")
    channels(client, ch_payload("QR-1"))
    assert channels(client, ch_payload("QR-1"), key="sandbox-key-2").status_code == 201


def test_quantity_rule(client: httpx.Client, sandbox: Sandbox) -> None:
    resp = channels(client, ch_payload("QR-1", quantity=3))
    codes = [t["qr_code"] for t in resp.json()["data"]]
    assert len(codes) == 3 and codes[0] == "QR-1" and len(set(codes)) == 3
    sandbox.set_switches("fourvenues_channels", quantity_rule="tickets")
    assert len(channels(client, ch_payload(None, quantity=3)).json()["data"]) == 1
    sandbox.set_switches("fourvenues_channels", quantity_rule="must_match")
    assert channels(client, ch_payload(None, quantity=3)).status_code == 400


def test_create_status_and_error_body_switches(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_switches("fourvenues_channels", create_status=200, error_body="boom")
    assert channels(client).status_code == 200
    resp = channels(client, {"ticket_rate_id": "5f8d0f8b9d2b3b0017b6d8a0", "tickets": []})
    assert resp.json() == {
        "statusCode": 400,
        "error": "Bad Request",
        "message": '"tickets" must contain at least 1 items',
    }


def test_list_ignores_filters_by_default(client: httpx.Client, sandbox: Sandbox) -> None:
    channels(client, ch_payload("QR-1"))
    channels(client, ch_payload("QR-2"))
    channels(client, ch_payload("QR-3"), key="sandbox-key-2")
    listed = client.get(CH + "/tickets", params={"qr_code": "QR-1", "limit": 1}, headers=H).json()
    assert [t["qr_code"] for t in listed["data"]] == ["QR-1", "QR-2"]  # the channel's own only
    sandbox.set_switches("fourvenues_channels", list_filters="applied")
    filtered = client.get(CH + "/tickets", params={"qr_code": "QR-1"}, headers=H).json()
    assert [t["qr_code"] for t in filtered["data"]] == ["QR-1"]
    paged = client.get(CH + "/tickets", params={"limit": 1, "offset": 1}, headers=H).json()
    assert [t["qr_code"] for t in paged["data"]] == ["QR-2"]


def test_refund_voids_then_repeats_until_fully_refunded(client: httpx.Client, sandbox: Sandbox) -> None:
    ticket = channels(client).json()["data"][0]  # total_price 10
    url = f"{CH}/tickets/{ticket['_id']}/refund"
    first = client.put(url, json={"amount": 4}, headers=H)
    assert first.status_code == 200
    assert first.json()["data"]["status"] == "voided" and first.json()["data"]["refunded"] == 4
    assert sandbox.ground_truth()["fourvenues_channels"]["issued"][0]["status"] == "voided"
    second = client.put(url, json={"amount": 6}, headers=H).json()["data"]
    assert second["refunded"] == 10 and len(second["refunds"]) == 2
    beyond = client.put(url, json={"amount": 1}, headers=H)
    assert beyond.status_code == 400 and beyond.json()["message"]
    assert client.put(f"{CH}/tickets/nope/refund", json={"amount": 1}, headers=H).status_code == 404
    assert client.put(url, json={"amount": 1}, headers={"X-Api-Key": "sandbox-key-2"}).status_code == 404
    assert sandbox.ground_truth()["fourvenues_channels"]["cancel_calls"] == {ticket["_id"]: 4, "nope": 1}


def test_refund_beyond_the_total_at_once(client: httpx.Client) -> None:
    ticket = channels(client).json()["data"][0]
    resp = client.put(f"{CH}/tickets/{ticket['_id']}/refund", json={"amount": 11}, headers=H)
    assert resp.status_code == 400


def test_undocumented_routes_are_html_404(client: httpx.Client) -> None:
    ticket = channels(client).json()["data"][0]
    resp = client.get(f"{CH}/tickets/{ticket['_id']}", headers=H)
    assert resp.status_code == 404 and "Cannot GET" in resp.text
    assert (
        client.post(f"{CH}/tickets/{ticket['_id']}/refund", json={"amount": 1}, headers=H).status_code == 404
    )
