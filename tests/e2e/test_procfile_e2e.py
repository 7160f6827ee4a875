"""The Procfile runs with honcho as it is: release, then intake, worker, beat and metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import free_port
from tests.e2e.harness import FAST_SETTINGS, wait_for
from tests.helpers import envelope
from worker.devtools.sandbox.server import start_in_thread
from worker.producer import publish

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_honcho_runs_the_procfile(tmp_path: Path, redis_url: str) -> None:
    server = start_in_thread()
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETRELAY_")}
    env.update(FAST_SETTINGS)
    env.update(
        {
            "TICKETRELAY_REDIS_URL": redis_url,
            "TICKETRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'relay.db'}",
            "TICKETRELAY_SANDBOX": "1",  # no accounts file: the sandbox, chosen explicitly
            "TICKETRELAY_SANDBOX_URL": server.url,
            "TICKETRELAY_STATE_DIR": str(tmp_path / "state"),
            "TICKETRELAY_METRICS_PORT": str(metrics_port),
        }
    )
    honcho = [str(ROOT / ".venv" / "bin" / "honcho"), "-d", str(ROOT), "-f", str(ROOT / "Procfile")]
    release = subprocess.run(
        [*honcho, "start", "release"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert "newest schema" in release.stdout, release.stdout + release.stderr
    proc = subprocess.Popen(
        [*honcho, "start", "intake", "worker", "beat", "metrics"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        publish(redis.Redis.from_url(redis_url), envelope("eguma", "honcho-1"))

        def issued() -> bool:
            try:
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            except httpx.HTTPError:
                return False
            return 'ticketrelay_bookings{account="default",provider="eguma",status="issued"} 1.0' in text

        wait_for(issued, 90, "the booking to be issued under honcho")
    finally:
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        server.stop()
    assert time.monotonic() - started < 30
    for name in ("intake", "worker", "beat", "metrics"):
        assert f"{name}.1" in out
