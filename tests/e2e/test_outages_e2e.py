"""Outages, end to end (issue "Prove it under faults", item 3): Redis unreachable for 30 s,
PostgreSQL unreachable for 30 s, every provider down for 5 minutes. Intake, worker and beat are
real processes; they must keep running (never exit), reconnect on their own, and every booking
must end issued exactly once (sandbox ground truth) with its result on the results stream."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy.engine import make_url

from tests.conftest import _drop_postgres, _fresh_postgres, free_port
from tests.e2e.harness import System, codes_kept, wait_for
from tests.e2e.tcpproxy import TcpProxy
from tests.e2e.test_pipeline_e2e import creation_counts
from tests.helpers import envelope
from worker.devtools.embedded import redis_answers, start_server

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

PROVIDERS = ["remypass", "fourvenues", "fourvenues_channels", "eguma"]
PROCESSES = ("intake", "worker", "beat")
OUTAGE_S = 30.0


def batch(tag: str, per_provider: int) -> list[dict[str, Any]]:
    return [envelope(p, f"{tag}-{p}-{i}") for i in range(per_provider) for p in PROVIDERS]


def assert_alive(system: System) -> None:
    """Every process still runs: it never exited (a restart by us would hide a crash)."""
    for name in PROCESSES:
        proc = system.sup.procs[name]
        assert proc.poll() is None, f"{name} exited with {proc.returncode}:\n{system.logs()[-4000:]}"


def hold_outage(system: System, seconds: float) -> None:
    """Wait out the outage, checking all along that no process gives up."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert_alive(system)
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    assert_alive(system)


def statuses(system: System, envs: list[dict[str, Any]]) -> list[str]:
    return [r.status for e in envs for r in system.rows_for(e["message_id"])]


def wait_in_flight(system: System, envs: list[dict[str, Any]]) -> None:
    """Until provider calls are under way (the outage must hit work in progress)."""
    wait_for(lambda: "in_progress" in statuses(system, envs), 90, "a provider call in progress")


def assert_every_booking_issued_once(system: System, envs: list[dict[str, Any]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for env in envs:
        mid = env["message_id"]
        result = system.wait_result(mid, timeout=max(5.0, deadline - time.monotonic()))
        assert result["status"] == "issued", result
        # At least once on the results stream, and never a contradicting status.
        assert {r["status"] for r in system.results_for(mid)} == {"issued"}, system.results_for(mid)
        rows = system.rows_for(mid)
        assert len(rows) == 1, rows
        row = rows[0]
        assert row.status == "issued" and row.idempotency_key == result["idempotency_key"]
        counts = creation_counts(system, env, result)
        assert counts and set(counts) == {1}, (mid, counts)
    # Every result goes out: the sweeper publishes the ones whose publish failed in the outage.
    wait_for(
        lambda: all(system.rows_for(e["message_id"])[0].callback_sent_at for e in envs),
        30,
        "callback_sent_at on every row",
    )


def log_of(system: System, name: str) -> str:
    return (system.tmp / "logs" / f"{name}.log").read_text(errors="replace")


def assert_heartbeats_after(system: System, since: float) -> None:
    """Intake and worker prove they work again: their heartbeat files are touched after `since`."""
    beats = system.tmp / "state" / "heartbeat"

    def fresh(path: Path) -> bool:
        return path.exists() and path.stat().st_mtime > since

    for name in ("intake", "worker"):
        wait_for(partial(fresh, beats / name), 30, f"a fresh {name} heartbeat")


# --- Redis -----------------------------------------------------------------------------------


@pytest.mark.timeout(600)
def test_redis_unreachable_for_30_seconds(tmp_path: Path) -> None:
    """A Redis of our own (AOF on, so a restart keeps its data: down, not wiped) is stopped for
    30 s while provider calls are in flight and tasks wait in the queue, then started again on
    the same port and data dir."""
    port = free_port()
    data_dir = tmp_path / "valkey"
    data_dir.mkdir()
    server = start_server(port=port, data_dir=str(data_dir), appendonly=True)
    url = f"redis://127.0.0.1:{port}/0"
    system = System(tmp_path, url)
    try:
        system.start()
        codes_kept(system)  # a lost Fourvenues answer can be settled (docs/providers.md)
        system.sandbox.set_faults("*", latency_ms=1500)
        before = batch("redis-before", 3)
        for env in before:
            system.publish(env)
        wait_in_flight(system, before)

        server.terminate()
        server.wait(15)
        down_at = time.time()
        assert not redis_answers(url)
        hold_outage(system, OUTAGE_S)  # producers cannot XADD now: nothing is published

        server = start_server(port=port, data_dir=str(data_dir), appendonly=True)
        up_at = time.time()
        # The data survived the restart: the stream and the group, with what it had read, are
        # still there (not the entries themselves: acknowledged ones may have been trimmed).
        groups = system.redis.xinfo_groups("ticketrelay:bookings")
        assert [g["name"] for g in groups] == [b"ticketrelay-intake"]
        assert groups[0]["last-delivered-id"] != b"0-0"
        system.sandbox.set_faults("*")
        after = batch("redis-after", 1)
        for env in after:
            system.publish(env)

        assert_every_booking_issued_once(system, before + after, timeout=180)
        assert_alive(system)
        assert_heartbeats_after(system, up_at)
        assert system.dead_letters() == []
        assert '"event": "unavailable"' in log_of(system, "intake")  # it did see the outage
        print(f"redis down {up_at - down_at:.1f}s; all issued {time.time() - up_at:.1f}s after restart")
    finally:
        system.stop()
        if server.poll() is None:
            server.terminate()
            server.wait(15)


# --- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture
def postgres_behind_proxy(postgres_admin_url: str) -> Iterator[tuple[str, str, TcpProxy]]:
    """A fresh, migrated database: (direct URL, URL through a TCP proxy, the proxy). The shared
    PostgreSQL service itself is never stopped; the proxy makes it unreachable."""
    direct, name = _fresh_postgres(postgres_admin_url)
    parsed = make_url(direct)
    proxy = TcpProxy(parsed.host or "127.0.0.1", parsed.port or 5432)
    proxied = parsed.set(host=proxy.host, port=proxy.port).render_as_string(hide_password=False)
    try:
        yield direct, proxied, proxy
    finally:
        proxy.close()
        _drop_postgres(postgres_admin_url, name)


@pytest.mark.postgres
@pytest.mark.timeout(600)
def test_postgresql_unreachable_for_30_seconds(
    tmp_path: Path, redis_server_url: str, postgres_behind_proxy: tuple[str, str, TcpProxy]
) -> None:
    """Every connection of intake, worker and beat to PostgreSQL is cut and new ones are reset
    for 30 s while calls are in flight; bookings also arrive during the outage."""
    direct, proxied, proxy = postgres_behind_proxy
    redis.Redis.from_url(redis_server_url).flushdb()
    # Migrations and the test's own reads go straight to PostgreSQL; the processes use the proxy.
    system = System(
        tmp_path, redis_server_url, database_url=direct, extra_env={"TICKETRELAY_DATABASE_URL": proxied}
    )
    try:
        system.start()
        codes_kept(system)  # a lost Fourvenues answer can be settled (docs/providers.md)
        system.sandbox.set_faults("*", latency_ms=1500)
        before = batch("pg-before", 3)
        for env in before:
            system.publish(env)
        wait_in_flight(system, before)

        proxy.pause()
        down_at = time.time()
        hold_outage(system, 5)
        during = batch("pg-during", 1)  # Redis is up: these are published, not yet accepted
        for env in during:
            system.publish(env)
        hold_outage(system, OUTAGE_S - 5)
        assert all(not system.rows_for(e["message_id"]) for e in during)  # nothing got through
        assert proxy.refused > 0, "nobody tried to reach PostgreSQL during the outage"

        proxy.resume()
        up_at = time.time()
        system.sandbox.set_faults("*")
        after = batch("pg-after", 1)
        for env in after:
            system.publish(env)

        assert_every_booking_issued_once(system, before + during + after, timeout=180)
        assert_alive(system)
        assert_heartbeats_after(system, up_at)
        assert system.dead_letters() == []
        # Intake saw the outage and said so: a cut connection is "unavailable"; a refused new
        # one is waited for (worker.db's connect wait) and logged as db_connect_refused.
        intake_log = log_of(system, "intake")
        assert '"event": "unavailable"' in intake_log or '"event": "db_connect_refused"' in intake_log
        print(
            f"postgres down {up_at - down_at:.1f}s (cut {proxy.cut}, refused {proxy.refused}); "
            f"all issued {time.time() - up_at:.1f}s after"
        )
    finally:
        system.stop()


# --- the provider ----------------------------------------------------------------------------

PROVIDER_DOWN_S = 300.0
# Issue 11: an accounts file that sets only base_url and key, so the defaults for attempts and
# backoff (8 attempts, 1 s doubling to 300 s), the breaker's defaults, the sweeper's period.
PROVIDER_OUTAGE_ENV = {
    "TICKETRELAY_DEFAULT_MAX_ATTEMPTS": "8",
    "TICKETRELAY_BACKOFF_BASE_S": "1",
    "TICKETRELAY_BACKOFF_CAP_S": "300",
    "TICKETRELAY_MAX_COUNTDOWN_S": "60",
    "TICKETRELAY_VISIBILITY_TIMEOUT_S": "600",
    "TICKETRELAY_STALE_AFTER_S": "60",
    "TICKETRELAY_SWEEP_INTERVAL_S": "15",
}
# One booking per open interval per account, plus the run that opened it (5), plus what was
# in flight when it opened (up to the worker's threads): 5, 10, 20, 40, 60, 60 ... s in 300 s
# is 8 probes.
MAX_CALLS_DURING_OUTAGE = 5 + 8 + 8


@pytest.mark.timeout(1200)
def test_provider_down_for_5_minutes(tmp_path: Path, redis_server_url: str) -> None:
    """Every provider answers 503 to everything for 5 minutes while 40 bookings arrive, then
    recovers. With the defaults every booking must wait, not fail: the breaker opens per
    account, parks the bookings without spending attempts and lets one probe through per
    interval; after the recovery every booking is issued exactly once."""
    redis.Redis.from_url(redis_server_url).flushdb()
    system = System(tmp_path, redis_server_url, extra_env=PROVIDER_OUTAGE_ENV)
    # Both Fourvenues APIs: the readings of their docs under which a booking in doubt (every 503
    # is one) can be proved absent and sent again (tests/integration/test_outage_issuing.py).
    codes_kept(system)
    try:
        system.start()
        warm = batch("provider-warm", 1)  # a running system: each account has answered once
        for env in warm:
            system.publish(env)
        try:  # generous: a cold start of the processes may take a while on a busy machine
            assert_every_booking_issued_once(system, warm, timeout=240)
        except AssertionError:
            print(system.logs()[-4000:])
            raise

        system.sandbox.set_faults("*", error_503_rate=1.0)
        before = {p: v["requests"] for p, v in system.sandbox.ground_truth().items()}
        down_at = time.monotonic()
        envs = batch("provider-down", 10)
        published = 0
        while time.monotonic() - down_at < PROVIDER_DOWN_S:
            assert_alive(system)
            # 40 bookings over the first 4 minutes of the outage.
            due = min(len(envs), int((time.monotonic() - down_at) / 240 * len(envs)) + 1)
            while published < due:
                system.publish(envs[published])
                published += 1
            for env in envs[:published]:
                for row in system.rows_for(env["message_id"]):
                    assert row.status in ("queued", "in_progress", "retrying"), (row.status, row.error_type)
            time.sleep(2)
        for env in envs[published:]:
            system.publish(env)
        during = {p: v["requests"] - before[p] for p, v in system.sandbox.ground_truth().items()}

        system.sandbox.set_faults("*")
        up_at = time.monotonic()
        assert_every_booking_issued_once(system, envs, timeout=240)
        drained = time.monotonic() - up_at
        rows = [system.rows_for(e["message_id"])[0] for e in envs]
        charged = sorted(r.attempts - r.attempts_base for r in rows)
        # The outage spent (almost) none of their budgets: per account the calls that opened the
        # circuit (5 in a row, and now and then one more in flight as it opened), then each
        # booking's one successful call; never all 8 of one booking.
        assert max(charged) < 8 and sum(charged) <= len(envs) + 4 * 7, charged
        assert all(1 <= n <= MAX_CALLS_DURING_OUTAGE for n in during.values()), during
        worker_log = log_of(system, "worker")
        assert '"event": "circuit_open"' in worker_log and '"event": "circuit_closed"' in worker_log
        # Waits longer than a Celery countdown came back through the sweeper.
        assert re.search(r'"event": "sweep", "redriven": [1-9]', worker_log)
        assert_alive(system)
        print(
            f"provider down {up_at - down_at:.0f}s; requests during it {during}; all 40 issued "
            f"{drained:.1f}s after recovery; attempts charged {charged}"
        )
    finally:
        system.stop()
