"""Cancellations end to end (CONTRACT.md 1.1) with real processes: intake, the Celery worker
and beat, Redis, SQLite and the sandbox over HTTP. For each provider a booking, then its
cancel: `cancelled` at the simulator with exactly one void call, the booking's result
republished with a raised revision; a cancel sent right behind its booking waits for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.keys import idempotency_key
from tests.e2e.harness import System, clean_faults, running_system, wait_for
from tests.helpers import envelope
from tests.polyglot import LANGUAGES, Example, example, printed

pytestmark = pytest.mark.slow
PROVIDERS = ["remypass", "fourvenues", "fourvenues_channels", "eguma"]
VOIDED = {
    "remypass": "voided",
    "fourvenues": "refunded",
    "fourvenues_channels": "voided",
    "eguma": "cancelled",
}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[System]:
    yield from running_system(tmp_path_factory, redis_server_url, "cancel")


@pytest.fixture(autouse=True)
def _clean_faults(system: System) -> Iterator[None]:
    yield from clean_faults(system)


def cancel_env(provider: str, mid: str, booking: str) -> dict[str, Any]:
    return {"message_id": mid, "operation": "cancel", "cancels": booking, "provider": provider}


def final_result(system: System, mid: str, status: str | None = None, revision: int = 1) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        for r in system.results_for(mid):
            if r.get("revision", 1) == revision and (status is None or r["status"] == status):
                return r
        return None

    result: dict[str, Any] = wait_for(found, 60, f"result r{revision} of {mid}")
    return result


def voids_of(system: System, provider: str, booking: dict[str, Any]) -> dict[str, int]:
    calls: dict[str, int] = system.sandbox.ground_truth()[provider]["cancel_calls"]
    ids = (
        [booking["provider_reference"]]
        if provider == "eguma"
        else [t["ticket_id"] for t in booking["tickets"]]
    )
    return {i: calls.get(i, 0) for i in ids}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_book_then_cancel_voids_once(system: System, provider: str) -> None:
    booking_mid, cancel_mid = f"e2e-bk-{provider}", f"e2e-cx-{provider}"
    system.publish(envelope(provider, booking_mid))
    issued = final_result(system, booking_mid, "issued")

    system.publish(cancel_env(provider, cancel_mid, booking_mid))
    system.publish(cancel_env(provider, cancel_mid, booking_mid))  # a resend of the same cancel
    done = final_result(system, cancel_mid)

    assert (done["status"], done["operation"], done["cancels"]) == ("cancelled", "cancel", booking_mid), done
    assert done["idempotency_key"] == idempotency_key(provider, "default", cancel_mid)
    corrected = final_result(system, booking_mid, "cancelled", revision=2)
    assert corrected["idempotency_key"] == issued["idempotency_key"]
    assert set(voids_of(system, provider, issued).values()) == {1}
    truth = system.sandbox.ground_truth()[provider]["issued"]
    mine = {t["ticket_id"] for t in issued["tickets"]} if provider != "eguma" else None
    statuses = {
        t["status"]
        for t in truth
        if (t.get("booking") == issued["provider_reference"] if mine is None else t["id"] in mine)
    }
    assert statuses == {VOIDED[provider]}


def test_a_cancel_right_behind_its_booking_waits_and_voids_once(system: System) -> None:
    system.sandbox.set_faults("remypass", latency_ms=1500)  # the booking is still in flight
    system.publish(envelope("remypass", "e2e-bk-race"))
    system.publish(cancel_env("remypass", "e2e-cx-race", "e2e-bk-race"))
    system.publish(cancel_env("remypass", "e2e-cx-race-2", "e2e-bk-race"))  # a second cancel

    first = final_result(system, "e2e-cx-race")
    second = final_result(system, "e2e-cx-race-2")

    assert first["status"] == second["status"] == "cancelled"
    booking = final_result(system, "e2e-bk-race", "cancelled", revision=2)
    assert set(voids_of(system, "remypass", booking).values()) == {1}
    assert [first["attempts"], second["attempts"]].count(0) == 1  # only one of them called


# --- the producer examples in other languages: book, then cancel with `--cancel` -------------


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cancel-polyglot-build")


@pytest.fixture(scope="module", params=LANGUAGES)
def lang_example(request: pytest.FixtureRequest, build_dir: Path) -> Example:
    return example(request.param, build_dir)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_example_cancels_what_it_booked(system: System, lang_example: Example, provider: str) -> None:
    env = {"REDIS_URL": system.redis_url}
    booked = lang_example.run("--provider", provider, "--timeout", "60", env=env)
    out = printed(booked.stdout)
    assert booked.returncode == 0, booked.stdout + booked.stderr
    issued = json.loads(out["result"])

    cancelled = lang_example.run(
        "--provider", provider, "--cancel", out["message_id"], "--timeout", "60", env=env
    )

    log = cancelled.stdout + cancelled.stderr
    assert cancelled.returncode == 0, log
    result = json.loads(printed(cancelled.stdout)["result"])
    assert (result["status"], result["operation"], result["cancels"]) == (
        "cancelled",
        "cancel",
        out["message_id"],
    )
    assert system.row(issued["idempotency_key"]).status == "cancelled"
    assert set(voids_of(system, provider, issued).values()) == {1}


def test_example_exits_non_zero_when_the_cancel_is_not_cancelled(
    system: System, lang_example: Example
) -> None:
    # A message_id never booked: the cancel is rejected (after the worker's grace period).
    done = lang_example.run(
        "--provider", "remypass", "--cancel", f"never-booked-{lang_example.language}", "--timeout", "60",
        env={"REDIS_URL": system.redis_url},
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(printed(done.stdout)["result"])["status"] == "rejected"
