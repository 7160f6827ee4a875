"""Bulk re-issuance with real processes: the command, the nightly task, and a rate limit that
two worker processes share."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.keys import idempotency_key
from tests.e2e.harness import System, running_system, wait_for
from tests.helpers import envelope
from worker.app import REISSUE_TASK, make_app
from worker.settings import Settings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, redis_server_url: str) -> Iterator[System]:
    extra = {"TICKETRELAY_DEFAULT_MAX_ATTEMPTS": "2", "TICKETRELAY_REISSUE_SELECTION": "status=failed"}
    yield from running_system(tmp_path_factory, redis_server_url, "reissue", extra)


def _cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "ticketrelay"), *args],
        env={**os.environ, **system.env},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def _fail_some(system: System, prefix: str, n: int) -> list[str]:
    system.sandbox.set_faults("eguma", fail_next=[{"status": 429}] * (2 * n))
    mids = [f"{prefix}-{i}" for i in range(n)]
    for mid in mids:
        system.publish(envelope("eguma", mid))
    for mid in mids:
        assert system.wait_result(mid)["status"] == "failed"
    system.sandbox.set_faults("eguma")
    return mids


def test_reissue_command_redrives_failed_bookings(system: System, tmp_path: Path) -> None:
    mids = _fail_some(system, "cmd", 4)
    system.publish(envelope("remypass", "cmd-ok"))
    assert system.wait_result("cmd-ok")["status"] == "issued"

    dry = _cli(system, "reissue", "--dry-run", "--status", "failed,issued")
    assert dry.returncode == 0, dry.stderr
    assert "eguma" in dry.stdout and "would be re-driven with the original key" in dry.stdout
    assert "already issued: skipped" in dry.stdout

    refused = _cli(system, "reissue", "--status", "issued", "--new-generation")
    assert refused.returncode == 2 and "remypass" in refused.stderr

    report_file = tmp_path / "report.json"
    done = _cli(system, "reissue", "--provider", "eguma", "--report", str(report_file))
    assert done.returncode == 0, done.stderr
    assert "100%" in done.stderr  # the progress bar reached the end
    report = json.loads(report_file.read_text())
    assert report["by_provider"] == {"eguma": {"issued": 4}} and report["state"] == "done"
    truth = system.sandbox.ground_truth()["eguma"]["creations"]
    for mid in mids:
        key = idempotency_key("eguma", "default", mid)
        assert truth[key] == 1
        assert {r["status"] for r in system.results_for(mid)} == {"failed", "issued"}
    again = _cli(system, "reissue", "--provider", "eguma")
    assert again.returncode == 0 and json.loads(again.stdout)["driven"] == 0  # nothing left


def test_nightly_task(system: System) -> None:
    mids = _fail_some(system, "nightly", 3)
    app = make_app(Settings(redis_url=system.redis_url))
    app.send_task(REISSUE_TASK, queue="ticketrelay")
    for mid in mids:
        wait_for(lambda m=mid: system.rows_for(m)[0].status == "issued", 60, f"{mid} re-issued")

    def report() -> dict[str, object] | None:
        from sqlalchemy import text

        with system.engine.connect() as conn:
            row = conn.execute(
                text("select state, report from reissue_runs where run_id like 'nightly-%'")
            ).first()
        return json.loads(row[1]) if row and row[0] == "done" else None

    final = wait_for(report, 30, "the nightly report")
    assert final["by_provider"] == {"eguma": {"issued": 3}}
