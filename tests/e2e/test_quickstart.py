"""The README's promises, run as a new user would: `./ticketrelay demo`, and `./ticketrelay dev`
plus one `XADD` per provider from examples/ giving four issued rows and four results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import free_port
from tests.e2e.harness import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETRELAY_")}
    # A port where nothing answers: the embedded server must start, as on a bare machine.
    env["TICKETRELAY_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    env["TICKETRELAY_SANDBOX_URL"] = f"http://127.0.0.1:{free_port()}"
    env["TICKETRELAY_STATE_DIR"] = str(tmp_path / "state")
    env["TICKETRELAY_FLOWER_PORT"] = str(free_port())
    env["TICKETRELAY_METRICS_PORT"] = str(free_port())
    return env


def _descendants_alive(pgid_leader: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,pgid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines()[1:] if str(pgid_leader) in line.split()[1:2]]


def test_demo_issues_one_booking_per_provider(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(ROOT / "ticketrelay"), "demo"],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for provider in ("remypass", "fourvenues", "fourvenues_channels", "eguma"):
        assert any(
            line.startswith(provider + " ") and " issued " in line for line in proc.stdout.splitlines()
        )
    assert "all demo bookings issued" in proc.stdout
    assert "SANDBOX" in proc.stdout  # says plainly that no real provider was called
    flower = next(line for line in proc.stdout.splitlines() if line.startswith("flower "))
    assert "user ops" in flower and "password " in flower  # generated credentials are shown


def test_dev_then_xadd_per_provider_gives_four_issued_rows(tmp_path: Path) -> None:
    env = _env(tmp_path)
    dev = subprocess.Popen(
        [str(ROOT / "ticketrelay"), "dev"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        client = redis.Redis.from_url(env["TICKETRELAY_REDIS_URL"])
        wait_for(lambda: _ping(client), 60, "the embedded Redis")
        cli = shutil.which("redis-cli")
        port = env["TICKETRELAY_REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
        for provider in ("remypass", "fourvenues", "fourvenues_channels", "eguma"):
            message = (ROOT / "examples" / f"{provider}.json").read_text()
            if cli:  # exactly the README's command
                subprocess.run(
                    [cli, "-p", port, "XADD", "ticketrelay:bookings", "*", "message", message],
                    check=True,
                    capture_output=True,
                )
            else:
                subprocess.run(
                    [
                        str(ROOT / "ticketrelay"),
                        "redis-cli",
                        "XADD",
                        "ticketrelay:bookings",
                        "*",
                        "message",
                        message,
                    ],
                    check=True,
                    env=env,
                    capture_output=True,
                )
        db = tmp_path / "ticketrelay.db"

        def issued() -> list[tuple[str, str]]:
            if not db.exists():
                return []
            with sqlite3.connect(db) as conn:
                try:
                    rows = conn.execute("select provider, status from ticket_issuances").fetchall()
                except sqlite3.OperationalError:
                    return []
            return rows if len(rows) == 4 and all(s == "issued" for _p, s in rows) else []

        rows = wait_for(issued, 90, "four issued rows")
        metrics = httpx.get(f"http://127.0.0.1:{env['TICKETRELAY_METRICS_PORT']}/metrics", timeout=10).text
        assert 'ticketrelay_bookings{account="default",provider="eguma",status="issued"} 1.0' in metrics
        assert sorted(p for p, _s in rows) == ["eguma", "fourvenues", "fourvenues_channels", "remypass"]
        results = [json.loads(f[b"result"]) for _i, f in client.xrange("ticketrelay:results")]
        assert sorted(r["status"] for r in results) == ["issued"] * 4
    finally:
        started = time.monotonic()
        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C
        out, _ = dev.communicate(timeout=60)
        took = time.monotonic() - started
    assert dev.returncode == 0, out
    assert took < 30, f"Ctrl-C took {took:.1f}s"
    time.sleep(0.5)
    assert _descendants_alive(dev.pid) == []


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
