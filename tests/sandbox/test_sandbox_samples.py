"""The sample bookings the project ships (examples/, samples.py, the demo) are accepted by the
simulators with their default catalogue and switches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sandbox_calls import channels, eguma, fourvenues, remypass

from worker.devtools.demo import demo_envelopes
from worker.devtools.sandbox import Sandbox
from worker.devtools.sandbox.samples import sample_payload

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _envelopes() -> list[dict[str, Any]]:
    found = [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]
    found += [
        json.loads(line) for line in (EXAMPLES / "bookings.jsonl").read_text().splitlines() if line.strip()
    ]
    return found + demo_envelopes("test")


def _send(client: httpx.Client, provider: str, payload: dict[str, Any], n: int) -> httpx.Response:
    if provider == "remypass":
        return remypass(client, payload)
    if provider == "fourvenues":
        return fourvenues(client, payload)
    if provider == "fourvenues_channels":
        return channels(client, payload)
    return eguma(client, payload, idem=f"sample-{n}")


def test_every_shipped_booking_is_accepted() -> None:
    envelopes = _envelopes()
    assert {e["provider"] for e in envelopes} == {"remypass", "fourvenues", "fourvenues_channels", "eguma"}
    for n, env in enumerate(envelopes):
        sandbox = Sandbox()  # fresh: the files repeat bookingIds on purpose
        with httpx.Client(transport=httpx.MockTransport(sandbox.handle), base_url="http://s") as client:
            resp = _send(client, env["provider"], env["payload"], n)
        assert resp.status_code == 201, (env["message_id"], resp.text)


@pytest.mark.parametrize("provider", ["remypass", "fourvenues", "fourvenues_channels", "eguma"])
@pytest.mark.parametrize("tickets", [1, 3])
def test_samples_are_accepted(client: httpx.Client, sandbox: Sandbox, provider: str, tickets: int) -> None:
    for n in (1, 2):
        resp = _send(client, provider, sample_payload(provider, n, tickets=tickets), n)
        assert resp.status_code == 201, resp.text
    assert sandbox.ground_truth()[provider]["tickets"] == (2 if provider == "remypass" else 2 * tickets)
