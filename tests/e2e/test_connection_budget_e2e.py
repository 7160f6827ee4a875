"""A burst on PostgreSQL after the worker was SIGKILLed twice keeps its throughput: a killed
worker's connections do not stay behind, the restarted one opens its own bounded pool, and no
key is dropped to the sweeper for want of a connection (docs/operations.md#connection-budget)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from tests.conftest import _drop_postgres, _fresh_postgres
from tests.e2e.harness import System, wait_for
from tests.helpers import envelope

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

N = 300
ISSUED = text("SELECT count(*) FROM ticket_issuances WHERE status = 'issued'")
BACKENDS = text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d AND application_name LIKE :a")


def _burst(system: System, tag: str, issued_before: int) -> float:
    started = time.monotonic()
    for i in range(N):
        system.publish(envelope("eguma", f"budget-{tag}-{i}"))

    def issued() -> bool:
        with system.engine.connect() as conn:
            done = conn.execute(
                text("SELECT count(*) FROM ticket_issuances WHERE status = 'issued'")
            ).scalar()
        return int(done or 0) >= issued_before + N

    wait_for(issued, 60, f"the {tag} burst issued")
    return N / (time.monotonic() - started)


def test_a_burst_after_two_worker_kills_keeps_its_throughput(
    tmp_path: Path, redis_server_url: str, postgres_admin_url: str
) -> None:
    redis.Redis.from_url(redis_server_url).flushdb()
    url, name = _fresh_postgres(postgres_admin_url)
    admin = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    env = {"TICKETRELAY_WORKER_CONCURRENCY": "16", "TICKETRELAY_LEASE_S": "30"}
    system = System(tmp_path, redis_server_url, env, database_url=url)

    def backends_of(pid: int) -> int:
        with admin.connect() as conn:
            return int(
                conn.execute(
                    BACKENDS,
                    {"d": name, "a": f"ticketrelay %-{pid}"},
                ).scalar_one()
            )

    try:
        system.start("intake", "worker", "beat")
        rates = [_burst(system, "first", 0)]
        for kill in range(2):
            pid = system.sup.procs["worker"].pid
            assert 0 < backends_of(pid) <= 10  # the bounded pool (8 + 2), in use
            system.kill("worker")
            wait_for(lambda pid=pid: backends_of(pid) == 0, 5, "the killed worker's connections gone")  # type: ignore[misc]
            system.restart("worker")
            rates.append(_burst(system, f"after-kill-{kill}", N * len(rates)))
        logs = system.logs()
        assert "too many clients" not in logs and "sweeper will re-drive" not in logs
        # The first burst includes the worker's start; those after the kills must not be slower.
        assert min(rates[1:]) >= 0.7 * rates[0], f"bookings/s before and after each kill: {rates}"
    finally:
        system.stop()
        admin.dispose()
        _drop_postgres(postgres_admin_url, name)
