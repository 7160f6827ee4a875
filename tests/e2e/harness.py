"""A whole ticketrelay on this machine for end-to-end tests: the sandbox over real HTTP, a real
Redis, a real SQLite file, and real intake, Celery worker and beat processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine

from schemas.table import TicketIssuance
from worker import ledger
from worker.db import make_engine
from worker.devtools.sandbox.core import Sandbox
from worker.devtools.sandbox.server import SandboxHTTPServer, start_in_thread
from worker.devtools.supervisor import Supervisor
from worker.ops.migrate import upgrade
from worker.producer import publish

FAST_SETTINGS = {
    "TICKETRELAY_LEASE_S": "4",
    "TICKETRELAY_STALE_AFTER_S": "2",
    "TICKETRELAY_SWEEP_INTERVAL_S": "1",
    "TICKETRELAY_VISIBILITY_TIMEOUT_S": "60",
    "TICKETRELAY_MAX_COUNTDOWN_S": "30",
    "TICKETRELAY_BACKOFF_BASE_S": "0.2",
    "TICKETRELAY_BACKOFF_CAP_S": "5",
    "TICKETRELAY_DEFAULT_TIMEOUT_S": "5",
    "TICKETRELAY_DEFAULT_MAX_ATTEMPTS": "5",
    "TICKETRELAY_WORKER_CONCURRENCY": "8",
    "TICKETRELAY_INTAKE_BLOCK_MS": "200",
    "TICKETRELAY_INTAKE_RECLAIM_IDLE_MS": "3000",
    "TICKETRELAY_SOFT_SHUTDOWN_TIMEOUT_S": "5",
}


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class System:
    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        extra_env: dict[str, str] | None = None,
        database_url: str | None = None,
    ) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.redis = redis.Redis.from_url(redis_url)
        self.database_url = database_url or f"sqlite:///{tmp / 'ticketrelay.db'}"
        upgrade(self.database_url)
        self.engine: Engine = make_engine(self.database_url)
        self.sandbox = Sandbox(seed=7)
        self.server: SandboxHTTPServer = start_in_thread(self.sandbox)
        self.env = {
            **FAST_SETTINGS,
            "TICKETRELAY_REDIS_URL": redis_url,
            "TICKETRELAY_DATABASE_URL": self.database_url,
            "TICKETRELAY_SANDBOX": "1",
            "TICKETRELAY_SANDBOX_URL": self.server.url,
            "TICKETRELAY_STATE_DIR": str(tmp / "state"),
            **(extra_env or {}),
        }
        os.environ.pop("TICKETRELAY_ACCOUNTS_FILE", None)
        self.sup = Supervisor(log_dir=tmp / "logs")

    def start(self, *names: str) -> None:
        for name in names or ("intake", "worker", "beat"):
            self.sup.start(name, [name], self.env)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.sup.procs[name]
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def restart(self, name: str) -> None:
        self.sup.start(name, [name], self.env)

    def stop(self) -> None:
        self.sup.stop(timeout=15)
        self.server.stop()
        self.engine.dispose()

    def publish(self, env: dict[str, Any] | str) -> None:
        publish(self.redis, env, "ticketrelay:bookings")

    def results(self, stream: str = "ticketrelay:results") -> list[dict[str, Any]]:
        return [json.loads(f[b"result"]) for _i, f in self.redis.xrange(stream)]

    def results_for(self, message_id: str) -> list[dict[str, Any]]:
        return [r for r in self.results() if r["message_id"] == message_id]

    def wait_result(self, message_id: str, timeout: float = 60) -> dict[str, Any]:
        found: list[dict[str, Any]] = wait_for(
            lambda: self.results_for(message_id), timeout, f"a result for {message_id}"
        )
        return found[0]

    def row(self, key: str) -> TicketIssuance:
        row = ledger.get(self.engine, key)
        assert row is not None
        return row

    def rows_for(self, message_id: str) -> list[TicketIssuance]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            rows = conn.execute(select(ledger.T).where(ledger.C.message_id == message_id)).mappings()
            return [TicketIssuance(**r) for r in rows]

    def rows_for_all(self) -> list[TicketIssuance]:
        from sqlalchemy import select

        with self.engine.connect() as conn:
            return [TicketIssuance(**r) for r in conn.execute(select(ledger.T)).mappings()]

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted((self.tmp / "logs").glob("*.log")))

    def dead_letters(self) -> list[dict[bytes, bytes]]:
        return [f for _i, f in self.redis.xrange("ticketrelay:dead")]


def running_system(
    tmp_path_factory: Any, redis_url: str, name: str, extra_env: dict[str, str] | None = None
) -> Iterator[System]:
    """For a module-scoped fixture: a fresh Redis database, a started System, stopped after."""
    redis.Redis.from_url(redis_url).flushdb()
    system = System(tmp_path_factory.mktemp(name), redis_url, extra_env)
    system.start()
    try:
        yield system
    finally:
        system.stop()


def codes_kept(system: System) -> None:
    """The Fourvenues readings under which a lost answer can be settled: sent qr_codes become
    the tickets' codes, and the channels listing applies its qr_code filter. Tests of the
    pipeline's recovery use them; the worst-case defaults (where such bookings end
    needs_review) are the conformance suite's and the chaos test's (docs/providers.md)."""
    system.sandbox.set_switches("fourvenues", sent_qr_code="becomes_code")
    system.sandbox.set_switches("fourvenues_channels", list_filters="applied")


def clean_faults(system: System) -> Iterator[None]:
    """For an autouse fixture: every test starts and ends with a sandbox without faults."""
    system.sandbox.set_faults("*")
    yield
    system.sandbox.set_faults("*")


def creations(system: System, provider: str) -> dict[str, int]:
    truth: dict[str, int] = system.sandbox.ground_truth()[provider]["creations"]
    return truth


def creations_of_codes(system: System, provider: str, codes: list[str]) -> list[int]:
    """How many times the provider created each ticket whose code a result reports, from its
    ground truth: the code is the provider's (it may differ from the qr_code sent), the count
    is kept under the identity it was created with."""
    truth = system.sandbox.ground_truth()[provider]
    identity = {t["code"]: t["identity"] for t in truth["issued"]}
    return [truth["creations"].get(identity[c], 0) if c in identity else 0 for c in codes]


def run(cmd: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )
