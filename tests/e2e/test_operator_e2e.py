"""The operator commands against a running system (intake, worker, beat as real processes;
`./ticketrelay` as an operator runs it): list and show a needs_review booking, settle one by
hand, re-drive another, and check from a consumer's side (the results stream, highest revision
per key) that the corrections reached it; and the dead letters: list, show, replay a corrected
copy, purge."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import System, clean_faults, running_system, wait_for
from tests.e2e.test_pipeline_e2e import creation_counts
from tests.helpers import CUSTOMER_EMAIL, envelope

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
# Three attempts: three 503s (which may have created the booking) end needs_review. The
# breaker would open after five failures in a row and keep the next booking waiting instead.
ENV = {"TICKETRELAY_DEFAULT_MAX_ATTEMPTS": "3", "TICKETRELAY_BREAKER_FAILURE_THRESHOLD": "50"}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[System]:
    yield from running_system(tmp_path_factory, redis_server_url, "operator", ENV)


@pytest.fixture(autouse=True)
def _clean(system: System) -> Iterator[None]:
    yield from clean_faults(system)


def cli(system: System, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **system.env, "USER": "carol"}
    return subprocess.run(
        [str(ROOT / "ticketrelay"), *argv], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def in_review(system: System, mid: str) -> str:
    system.sandbox.set_faults("eguma", fail_next=[{"status": 503}] * 3)
    system.publish(envelope("eguma", mid))
    wait_for(
        lambda: [r for r in system.results_for(mid) if r["status"] == "needs_review"], 90, f"{mid} in review"
    )
    system.sandbox.set_faults("eguma")
    [row] = system.rows_for(mid)
    return row.idempotency_key


def consumer_view(system: System) -> dict[str, dict[str, Any]]:
    best: dict[str, dict[str, Any]] = {}
    for result in system.results():
        key = result["idempotency_key"]
        seen = best.get(key)
        if seen is None or result["revision"] > seen["revision"]:
            best[key] = result
        elif result["revision"] == seen["revision"]:
            assert result == seen
    return best


@pytest.mark.timeout(600)
def test_list_show_resolve_and_retry_reach_the_consumer(system: System, tmp_path: Path) -> None:
    settle_key = in_review(system, "op-settle")
    retry_key = in_review(system, "op-retry")

    proc = cli(system, "list", "--status", "needs_review", "--provider", "eguma", "--json")
    assert proc.returncode == 0, proc.stderr
    assert {settle_key, retry_key} <= {r["idempotency_key"] for r in json.loads(proc.stdout)}

    proc = cli(system, "show", settle_key, "--json")
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert [a["outcome"] for a in shown["attempts"]] == ["retry", "retry", "needs_review"]
    assert [r["revision"] for r in shown["results"]] == [1] and CUSTOMER_EMAIL not in proc.stdout

    tickets = tmp_path / "tickets.json"
    tickets.write_text(json.dumps([{"ticket_id": "E-1", "code": "EG-001", "category": None, "seat": None}]))
    proc = cli(
        system, "resolve", settle_key, "--issued", "--reference", "EG-ORDER-1", "--tickets", str(tickets)
    )
    assert proc.returncode == 0, proc.stderr
    assert cli(system, "resolve", settle_key, "--failed", "--reason", "twice").returncode == 1

    proc = cli(system, "retry", retry_key, "--reason", "e-guma is back")
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: system.row(retry_key).status == "issued", 90, "the re-driven booking issued")

    def corrected() -> dict[str, dict[str, Any]] | None:
        v = consumer_view(system)
        return v if v.get(retry_key, {}).get("revision") == 2 else None

    view = wait_for(corrected, 60, "revision 2 of the re-driven booking on the results stream")
    assert view[settle_key]["revision"] == 2 and view[settle_key]["status"] == "issued"
    assert view[settle_key]["provider_reference"] == "EG-ORDER-1"
    assert [t["code"] for t in view[settle_key]["tickets"]] == ["EG-001"]
    row = system.row(retry_key)
    assert view[retry_key]["status"] == "issued" == row.status
    assert [t["code"] for t in view[retry_key]["tickets"]] == [t["code"] for t in row.tickets]
    env = envelope("eguma", "op-retry")
    assert creation_counts(system, env, view[retry_key]) == [1]  # reconciled, never twice
    settled = system.row(settle_key)
    assert settled.resolved_by == "carol" and settled.revision == 2

    # Exit codes: not found 1, usage 2, store unreachable 3.
    assert cli(system, "show", "00000000-0000-0000-0000-000000000000").returncode == 1
    assert cli(system, "list", "--older-than", "soon").returncode == 2
    down = subprocess.run(
        [str(ROOT / "ticketrelay"), "show", settle_key],
        env={**os.environ, **system.env, "TICKETRELAY_REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert down.returncode == 3 and len(down.stderr.strip().splitlines()) == 1, down.stderr


@pytest.mark.timeout(300)
def test_dead_letters_are_listed_shown_replayed_corrected_and_purged(system: System, tmp_path: Path) -> None:
    bad = envelope("eguma", "op-dead-1")
    bad["provider"] = "no-such-provider"  # dead-lettered, with its customer's data inside
    system.publish(bad)
    wait_for(lambda: system.results_for("op-dead-1"), 60, "the rejected result")
    proc = cli(system, "dead", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    [entry] = [e for e in json.loads(proc.stdout) if e["replayed"] == 0 and "provider" in e["reason"]]
    proc = cli(system, "dead", "show", entry["id"])
    assert proc.returncode == 0, proc.stderr
    assert CUSTOMER_EMAIL not in proc.stdout + proc.stderr  # the payload's shape, never its values
    # A corrected copy with a new message_id goes through intake like any booking.
    fixed = tmp_path / "fixed.json"
    fixed.write_text(json.dumps(envelope("eguma", "op-dead-1-fixed")))
    proc = cli(system, "dead", "replay", entry["id"], "--corrected", str(fixed))
    assert proc.returncode == 0, proc.stderr
    wait_for(
        lambda: [r for r in system.results_for("op-dead-1-fixed") if r["status"] == "issued"], 60, "issued"
    )
    # Replayed once: a second replay needs --force; then purge removes the entry.
    assert cli(system, "dead", "replay", entry["id"], "--corrected", str(fixed)).returncode == 1
    assert cli(system, "dead", "purge", entry["id"]).returncode == 0
    proc = cli(system, "dead", "list", "--json")
    assert entry["id"] not in {e["id"] for e in json.loads(proc.stdout)}
    assert cli(system, "dead", "show", entry["id"]).returncode == 1  # gone: not found
