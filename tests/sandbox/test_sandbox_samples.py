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
from worker.devtools.sandbox.samples import example_files, sample_envelopes, sample_payload, write_examples

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


def test_the_files_in_examples_are_the_sample_bookings() -> None:
    """examples/ is written from samples.py (python -m worker.devtools.sandbox.samples examples);
    an edit to either alone fails here."""
    expected = example_files()
    for name, text in expected.items():
        assert (EXAMPLES / name).read_text() == text, f"examples/{name} differs from samples.py: rewrite it"
    assert {p.name for p in EXAMPLES.glob("*.json*")} == set(expected)


def test_the_demo_books_the_sample_bookings_under_new_ids() -> None:
    first, again = demo_envelopes("a"), demo_envelopes("b")
    assert [e["payload"] | {"bookingId": None} for e in first] == [
        e["payload"] | {"bookingId": None} for e in sample_envelopes("1", "example")
    ]
    assert {e["message_id"] for e in first}.isdisjoint(e["message_id"] for e in again)
    assert first[0]["payload"]["bookingId"] != again[0]["payload"]["bookingId"]


def test_write_examples_writes_what_is_checked(tmp_path: Path) -> None:
    write_examples(tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == example_files()
