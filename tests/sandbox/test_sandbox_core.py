"""Sandbox mechanics: routing, faults, ground truth, state, concurrency (in-process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from worker.devtools.sandbox import Sandbox
from worker.devtools.sandbox.samples import sample_payload

REMY = "http://sb.test/remypass/api/v1/public/event-tickets/create-from-booking"
EGUMA = "http://sb.test/eguma/v1/ticketing/booking.json"
KEY = {"X-API-Key": "sandbox-key"}


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(seed=7)


@pytest.fixture
def client(sandbox: Sandbox) -> Iterator[httpx.Client]:
    with httpx.Client(transport=httpx.MockTransport(sandbox.handle)) as c:
        yield c


def test_fail_next_is_consumed_in_order(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults(
        "remypass",
        fail_next=[{"status": 500}, {"status": 429, "retry_after": 2}, {"status": 503}],
    )
    statuses = []
    for n in range(4):
        response = client.post(REMY, headers=KEY, json=sample_payload("remypass", n))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "2"
        if response.status_code >= 500:
            assert response.json()["success"] is False  # the provider's own error style
    assert statuses == [500, 429, 503, 201]
    truth = sandbox.ground_truth()["remypass"]
    assert truth["requests"] == 4
    assert truth["faults"] == {"status_500": 1, "status_429": 1, "status_503": 1}
    assert truth["creations"] == {"BOOKING-3": 1}


def test_timeout_creates_nothing_and_drop_creates(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("remypass", fail_next=[{"kind": "timeout"}, {"kind": "drop_after_create"}])
    with pytest.raises(httpx.ReadTimeout):
        client.post(REMY, headers=KEY, json=sample_payload("remypass", 1))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post(REMY, headers=KEY, json=sample_payload("remypass", 2))
    truth = sandbox.ground_truth()["remypass"]
    assert truth["creations"] == {"BOOKING-2": 1}
    assert truth["faults"] == {"timeout": 1, "drop_after_create": 1}


def test_random_faults_are_seeded(sandbox: Sandbox) -> None:
    def run() -> list[int]:
        sandbox.reset()
        sandbox.set_faults("eguma", error_500_rate=0.3, error_503_rate=0.2, seed=42)
        with httpx.Client(transport=httpx.MockTransport(sandbox.handle)) as client:
            return [
                client.post(
                    EGUMA,
                    params={"apikey": "sandbox-key"},
                    headers={"Idempotency-Key": f"k{n}"},
                    json=sample_payload("eguma", n),
                ).status_code
                for n in range(40)
            ]

    first, second = run(), run()
    assert first == second
    assert {500, 503, 201} <= set(first)
    faults = sandbox.ground_truth()["eguma"]["faults"]
    assert faults["status_500"] == first.count(500)


def test_latency_is_added(client: httpx.Client, sandbox: Sandbox) -> None:
    sandbox.set_faults("fourvenues_channels", latency_ms=150)
    started = time.monotonic()
    client.get("http://sb.test/fourvenues-channels/tickets", headers={"X-Api-Key": "sandbox-key"})
    assert time.monotonic() - started >= 0.15


def test_set_faults_rejects_unknown_names(sandbox: Sandbox) -> None:
    with pytest.raises(ValueError):
        sandbox.set_faults("remypass", error_rate=1)
    with pytest.raises(ValueError):
        sandbox.set_faults("nope")
    with pytest.raises(ValueError):
        sandbox.set_faults("eguma", fail_next=[{"kind": "explode"}])
    with pytest.raises(ValueError):
        sandbox.set_faults("eguma", timeout_rate=2)


def test_reset_forgets_everything(client: httpx.Client, sandbox: Sandbox) -> None:
    client.post(REMY, headers=KEY, json=sample_payload("remypass"))
    sandbox.set_faults("remypass", fail_next=[{"status": 500}])
    sandbox.reset()
    assert sandbox.ground_truth()["remypass"]["requests"] == 0
    assert client.post(REMY, headers=KEY, json=sample_payload("remypass")).status_code == 201


def test_remypass_concurrent_same_booking_creates_once(sandbox: Sandbox) -> None:
    sandbox.set_faults("remypass", latency_ms=50)
    statuses: list[int] = []

    def post() -> None:
        with httpx.Client(transport=httpx.MockTransport(sandbox.handle)) as c:
            statuses.append(c.post(REMY, headers=KEY, json=sample_payload("remypass")).status_code)

    threads = [threading.Thread(target=post) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [201, 400, 400, 400, 400]
    assert sandbox.ground_truth()["remypass"]["creations"] == {"BOOKING-1": 1}


def test_accounts_are_separate(client: httpx.Client) -> None:
    payload = sample_payload("remypass")
    assert client.post(REMY, headers=KEY, json=payload).status_code == 201
    other = client.post(REMY, headers={"X-API-Key": "sandbox-key-2"}, json=payload)
    assert other.status_code == 201  # another account may use the same bookingId


def test_eguma_replay_and_refusals(client: httpx.Client, sandbox: Sandbox) -> None:
    params = {"apikey": "sandbox-key"}
    headers = {"Idempotency-Key": "k1"}
    first = client.post(EGUMA, params=params, headers=headers, json=sample_payload("eguma"))
    replay = client.post(EGUMA, params=params, headers=headers, json=sample_payload("eguma"))
    assert first.status_code == replay.status_code == 201
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    other = client.post(EGUMA, params=params, headers=headers, json=sample_payload("eguma", 2))
    assert other.status_code == 422
    unauth = client.post(EGUMA, headers=headers, json=sample_payload("eguma"))
    assert unauth.status_code == 401 and unauth.headers["content-type"].startswith("text/plain")
    assert sandbox.ground_truth()["eguma"]["creations"] == {"k1": 1}


def test_fourvenues_lookups_and_generated_codes(client: httpx.Client) -> None:
    headers = {"x-api-key": "sandbox-key"}
    created = client.post(
        "http://sb.test/fourvenues/integrations/tickets/",
        headers=headers,
        json=sample_payload("fourvenues", tickets=2),
    )
    assert created.status_code == 200
    data = created.json()["data"]
    assert isinstance(data, list) and len(data) == 2
    code = data[0]["code"]
    assert len(code) == 9 and code.isupper()  # generated when absent
    found = client.get(f"http://sb.test/fourvenues/tickets/by-code/{code}", headers=headers)
    assert found.status_code == 200 and found.json()["data"]["_id"] == data[0]["_id"]
    assert client.get("http://sb.test/fourvenues/tickets/by-code/NOPE", headers=headers).status_code == 404
    dup = sample_payload("fourvenues")
    dup["tickets"][0]["qr_code"] = code
    refused = client.post("http://sb.test/fourvenues/integrations/tickets/", headers=headers, json=dup)
    assert refused.status_code == 400 and refused.json() == {
        "success": False,
        "error": "qr_code already exists",
    }


def test_channels_filter_by_qr_code(client: httpx.Client) -> None:
    headers = {"X-Api-Key": "sandbox-key"}
    payload = sample_payload("fourvenues_channels")
    payload["tickets"][0]["qr_code"] = "MYCODE"
    assert (
        client.post("http://sb.test/fourvenues-channels/tickets", headers=headers, json=payload).status_code
        == 201
    )
    found = client.get(
        "http://sb.test/fourvenues-channels/tickets", params={"qr_code": "MYCODE"}, headers=headers
    ).json()
    assert [t["qr_code"] for t in found["data"]] == ["MYCODE"]
    none = client.get(
        "http://sb.test/fourvenues-channels/tickets", params={"qr_code": "OTHER"}, headers=headers
    ).json()
    assert none == {"data": [], "success": True}
