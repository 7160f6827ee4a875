"""The same simulators over the real HTTP server: each provider, control routes, switches and
clock, a concurrent in-flight key, timeouts and dropped connections on the wire."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from sandbox_calls import CH, EG, FV, RP, channels, eg_booking, eguma, fourvenues, fv_headers, remypass

from worker.devtools.sandbox import Sandbox, SandboxHTTPServer, start_in_thread


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(seed=4)


@pytest.fixture
def server(sandbox: Sandbox) -> Iterator[SandboxHTTPServer]:
    srv = start_in_thread(sandbox, port=0)
    yield srv
    srv.stop()


@pytest.fixture
def http(server: SandboxHTTPServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=3) as c:
        yield c


def test_each_provider_over_http(http: httpx.Client, sandbox: Sandbox) -> None:
    assert remypass(http).status_code == 201
    assert fourvenues(http).status_code == 201
    v1 = {"integration_id": "sandbox-integration", "secret": "sandbox-secret"}
    assert fourvenues(http, headers=v1).status_code == 201
    assert channels(http).status_code == 201
    assert eguma(http, eg_booking()).status_code == 201
    truth = http.get("/_sandbox/ground-truth").json()
    assert truth["remypass"]["creations"] == {"BOOKING-1": 1}
    assert truth["fourvenues"]["tickets"] == 2
    assert truth["fourvenues_channels"]["tickets"] == 1
    assert truth["eguma"]["creations"] == {"key-1": 1}
    in_process = sandbox.ground_truth()
    assert {p: t["issued"] for p, t in truth.items()} == {p: t["issued"] for p, t in in_process.items()}


def test_lookups_and_refunds_over_http(http: httpx.Client) -> None:
    ticket = fourvenues(http).json()["data"]
    got = http.get(f"{FV}/by-code/{ticket['code']}", headers=fv_headers())
    assert got.status_code == 200 and got.json()["data"]["_id"] == ticket["_id"]
    assert (
        http.post(f"{FV}/refund/{ticket['_id']}", json={"amount": 5}, headers=fv_headers()).status_code == 200
    )
    ch = channels(http).json()["data"][0]
    refund = http.put(
        f"{CH}/tickets/{ch['_id']}/refund", json={"amount": 10}, headers={"X-Api-Key": "sandbox-key"}
    )
    assert refund.json()["data"]["status"] == "voided"
    instance = remypass(http).json()["data"]["passInstance"]
    assert (
        http.post(f"{RP}/passes/{instance['_id']}/revoke", headers={"X-API-Key": "sandbox-key"}).status_code
        == 200
    )


def test_unknown_routes_over_http(http: httpx.Client) -> None:
    for path in ("/fourvenues/tickets/by-code/X", "/elsewhere", "/eguma/v1/ticketing/booking.xml"):
        resp = http.get(path)
        assert resp.status_code == 404 and resp.headers["content-type"].startswith("text/html")


def test_switches_and_clock_over_http(http: httpx.Client) -> None:
    assert (
        http.post("/_sandbox/switches", json={"provider": "eguma", "mismatch_status": 409}).status_code == 200
    )
    eguma(http, eg_booking(quantity=1))
    assert eguma(http, eg_booking(quantity=2)).status_code == 409
    assert http.post("/_sandbox/switches", json={"provider": "eguma", "bogus": 1}).status_code == 400
    assert http.post("/_sandbox/clock", json={"advance_s": 72 * 3600 + 1}).status_code == 200
    again = eguma(http, eg_booking(quantity=2))
    assert again.status_code == 201
    assert http.get("/_sandbox/ground-truth").json()["eguma"]["creations"] == {"key-1": 2}


def test_in_flight_key_over_http(http: httpx.Client, server: SandboxHTTPServer) -> None:
    http.post("/_sandbox/faults", json={"provider": "eguma", "latency_ms": 1500})
    statuses: list[int] = []

    def first() -> None:
        with httpx.Client(base_url=server.url, timeout=3) as c:
            statuses.append(eguma(c, eg_booking()).status_code)

    thread = threading.Thread(target=first)
    thread.start()
    _wait_for_first_request(http)
    second = eguma(http, eg_booking())
    thread.join()
    # Whichever got in first books; the other is refused while it runs.
    assert sorted([*statuses, second.status_code]) == [201, 409]
    assert http.get("/_sandbox/ground-truth").json()["eguma"]["creations"] == {"key-1": 1}


def _wait_for_first_request(http: httpx.Client) -> None:
    deadline = time.monotonic() + 5
    while http.get("/_sandbox/ground-truth").json()["eguma"]["requests"] < 1:
        assert time.monotonic() < deadline, "the first request never arrived"
        time.sleep(0.01)


def test_timeout_and_drop_on_the_wire(http: httpx.Client, server: SandboxHTTPServer) -> None:
    http.post(
        "/_sandbox/faults",
        json={
            "provider": "remypass",
            "timeout_sleep_s": 1.0,
            "fail_next": [{"kind": "timeout"}, {"kind": "drop_after_create"}],
        },
    )
    with httpx.Client(base_url=server.url, timeout=0.3) as short, pytest.raises(httpx.ReadTimeout):
        remypass(short)
    with pytest.raises(httpx.RemoteProtocolError):
        remypass(http)
    truth = http.get("/_sandbox/ground-truth").json()["remypass"]
    assert truth["creations"] == {"BOOKING-1": 1}
    assert truth["faults"] == {"timeout": 1, "drop_after_create": 1}
    assert remypass(http).status_code == 400  # the dropped one did land: duplicate


def test_query_key_and_reset_over_http(http: httpx.Client) -> None:
    assert (
        http.post(EG + "/booking.json", json=eg_booking(), headers={"Idempotency-Key": "k"}).status_code
        == 401
    )
    eguma(http, eg_booking())
    assert http.post("/_sandbox/reset").status_code == 200
    assert http.get("/_sandbox/ground-truth").json()["eguma"]["tickets"] == 0


def test_the_date_header_follows_the_simulated_clock(http: httpx.Client, sandbox: Sandbox) -> None:
    """Real servers send Date; the simulators' is their own clock (tickets' created_at come from
    it), on the wire and in-process alike."""
    from email.utils import parsedate_to_datetime

    sandbox.advance_clock(3 * 86400)
    wire = parsedate_to_datetime(remypass(http).headers["date"]).timestamp()
    in_process = parsedate_to_datetime(
        sandbox.handle(httpx.Request("GET", "http://sandbox/_sandbox/faults")).headers["date"]
    ).timestamp()
    for seen in (wire, in_process):
        assert abs(seen - sandbox.now()) < 3
        assert seen - time.time() > 3 * 86400 - 5
