"""The chaos run: many bookings across the four providers, two "hosts" (each its own intake and
worker, with its own host name) against one Redis and one database, a sandbox that injects
5xx, 429, timeouts and created-then-dropped answers, workers SIGKILLed every few seconds, an
intake killed once, and Redis restarted with all its data gone after the bookings were
accepted. The simulators keep every switch at its worst-case default. Then, from the sandbox's
ground truth and the table: every message exactly one final row, exactly one creation for
every issued booking, none for failed ones, no ticket code issued twice, no code reported that
the provider did not issue, a result for each.

CHAOS_BOOKINGS (default 5000, the issue's size) sets the size."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from sqlalchemy import func, select

from schemas.statuses import FINAL_STATUSES
from schemas.table import TicketIssuance
from tests.conftest import _drop_postgres, _fresh_postgres, _postgres_reachable, free_port
from tests.e2e.harness import System, wait_for
from tests.helpers import envelope
from worker import ledger
from worker.devtools.embedded import start_server
from worker.devtools.sandbox.switches import SWITCHES

pytestmark = [pytest.mark.slow, pytest.mark.chaos]
PROVIDERS = ("remypass", "fourvenues", "fourvenues_channels", "eguma")
N = int(os.environ.get("CHAOS_BOOKINGS", "5000"))
MIN_UPTIME_S = 6.0


class ResultReader(threading.Thread):
    """Reads the results stream the whole time, as a producer would, across the Redis restart."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.seen, self.stop = url, set[str](), threading.Event()
        self.last_id = "0"

    def run(self) -> None:
        client = redis_lib.Redis.from_url(self.url, socket_timeout=5)
        while not self.stop.is_set():
            try:
                got: Any = client.xread({"ticketrelay:results": self.last_id}, count=500, block=500)
                for _stream, entries in got or []:
                    for entry_id, fields in entries:
                        self.last_id = entry_id
                        self.seen.add(json.loads(fields[b"result"])["message_id"])
                if client.xlen("ticketrelay:results") == 0:
                    self.last_id = "0"  # the stream was wiped with Redis: start again at its start
            except (redis_lib.ConnectionError, redis_lib.TimeoutError):
                time.sleep(0.2)


@pytest.fixture
def chaos_db(tmp_path: Path) -> Iterator[str]:
    if _postgres_reachable() is None:
        from tests.conftest import PG_URL

        url, name = _fresh_postgres(PG_URL)
        try:
            yield url
        finally:
            _drop_postgres(PG_URL, name)
    else:  # still meaningful on one host: SQLite
        yield f"sqlite:///{tmp_path / 'chaos.db'}"


def judge_from_truth(
    envs: list[dict[str, Any]], rows: dict[str, TicketIssuance], truth: dict[str, dict[str, Any]]
) -> tuple[int, list[str]]:
    """Duplicates and broken rules counted from the providers' ground truth alone: never from a
    derivation of our codes (they are random, stored in the row at its first claim).

    - every ticket code a provider issued, it issued once;
    - per booking, what identifies it at the provider was created at most once, exactly once
      when `issued`, never when `failed`: RemyPass one pass per bookingId, e-guma one order per
      Idempotency-Key (our key), Fourvenues each ticket's qr_code as sent (the codes stored in
      the row) and the identity of every ticket whose code the result reports;
    - every code in a result was issued by the provider for that booking."""
    duplicates = 0
    problems: list[str] = []
    by_code: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for provider in PROVIDERS:
        issued = truth[provider]["issued"]
        counts = Counter(t["code"] for t in issued)
        doubled = [c for c, n in counts.items() if n > 1]
        duplicates += len(doubled)
        if doubled:
            problems.append(f"{provider}: ticket codes issued twice: {doubled[:5]}")
        by_code[provider] = {}
        for t in issued:
            by_code[provider].setdefault(t["code"], []).append(t)
    for env in envs:
        row = rows.get(env["message_id"])
        if row is None:
            continue
        provider = env["provider"]
        creations = truth[provider]["creations"]
        reported = [str(t["code"]) for t in row.tickets or [] if t.get("code")]
        found = [t for code in reported for t in by_code[provider].get(code, [])]
        foreign = [c for c in reported if c not in by_code[provider]]
        if foreign:
            problems.append(f"{env['message_id']} ({row.status}): codes the provider never issued: {foreign}")
        if provider == "remypass":
            ids = {env["payload"]["bookingId"]}
        elif provider == "eguma":
            ids = {row.idempotency_key}
            if any(t.get("booking") is None for t in found):
                problems.append(f"{env['message_id']}: e-guma tickets without a booking")
        else:
            ids = {c for c in row.qr_codes or [] if c} | {t["identity"] for t in found}
        made = {i: creations.get(i, 0) for i in ids}
        twice = [i for i, n in made.items() if n > 1]
        duplicates += len(twice)
        if twice:
            problems.append(f"{env['message_id']} ({row.status}): created more than once: {made}")
        if row.status == "issued" and not all(n == 1 for n in made.values()):
            problems.append(f"{env['message_id']}: issued, but created {made}")
        if row.status in ("failed", "rejected") and any(made.values()):
            problems.append(f"{env['message_id']}: {row.status}, but the provider created {made}")
    return duplicates, problems


def progress(system: System) -> str:
    """Rows per status, and the unfinished ones by status and attempts (for a run that did
    not drain in time)."""
    with system.engine.connect() as conn:
        by_status: dict[str, int] = dict(
            conn.execute(select(ledger.C.status, func.count()).group_by(ledger.C.status)).all()
        )
        stuck = conn.execute(
            select(ledger.C.provider, ledger.C.status, ledger.C.attempts, func.count())
            .where(ledger.C.status.not_in(list(FINAL_STATUSES)))
            .group_by(ledger.C.provider, ledger.C.status, ledger.C.attempts)
        ).all()
    return f"statuses={by_status} unfinished (provider, status, attempts, rows)={[tuple(r) for r in stuck]}"


def own_host(name: str) -> list[str]:
    """Run behind `unshare --uts`: the process gets a real host name of its own (root only)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return []
    return ["unshare", "--uts", "--", "sh", "-c", f'hostname {name} && exec "$0" "$@"']


@pytest.mark.timeout(1800)
def test_chaos(tmp_path: Path, chaos_db: str) -> None:
    port = free_port()
    server = start_server(port=port)
    url = f"redis://127.0.0.1:{port}/0"
    extra = {
        "TICKETRELAY_DEFAULT_TIMEOUT_S": "2",
        "TICKETRELAY_DEFAULT_MAX_ATTEMPTS": "12",
        "TICKETRELAY_BACKOFF_BASE_S": "0.3",
        "TICKETRELAY_BACKOFF_CAP_S": "3",
        "TICKETRELAY_WORKER_CONCURRENCY": "16",
    }
    system = System(tmp_path, url, extra, database_url=chaos_db)
    # The simulators at their worst-case defaults: every switch where the sandbox starts it.
    assert system.sandbox.switches() == {
        p: {name: sw.default for name, sw in table.items()} for p, table in SWITCHES.items()
    }
    system.sandbox.set_faults(
        "*",
        error_500_rate=0.10,
        rate_429=0.05,
        retry_after=1,
        timeout_rate=0.05,
        timeout_sleep_s=3,
        drop_after_create_rate=0.03,
        seed=11,
    )
    reader = ResultReader(url)
    reader.start()
    rng = random.Random(5)
    kills = 0
    started = time.monotonic()
    killer_stop = threading.Event()
    killing = threading.Thread(target=lambda: killer(), daemon=True)
    try:
        hosts: dict[str, dict[str, str]] = {}
        for h in ("a", "b"):
            env = {**system.env, "TICKETRELAY_STATE_DIR": str(tmp_path / f"state-{h}")}
            if not own_host(f"host-{h}"):  # no unshare here: host names by configuration only
                env["TICKETRELAY_CONSUMER_NAME"] = f"host-{h}-{os.getpid()}"
            hosts[h] = env
            system.sup.start(f"intake-{h}", ["intake"], env, own_host(f"host-{h}"))
            system.sup.start(f"worker-{h}", ["worker", "-n", f"w@host-{h}"], env, own_host(f"host-{h}"))
        system.sup.start("beat", ["beat"], system.env)

        started_at = {name: time.monotonic() for name in ("worker-a", "worker-b")}

        def killer() -> None:
            # SIGKILL a worker (its whole process group) every 2-4 s for the whole run, and
            # start it again, as a crashing deployment would. A worker is killed only once it
            # has run MIN_UPTIME_S: on a loaded machine a worker takes seconds to start, and
            # killing it sooner would stop all work instead of interrupting calls.
            nonlocal kills
            while not killer_stop.wait(rng.uniform(2, 4)):
                victim = rng.choice(["worker-a", "worker-b"])
                if time.monotonic() - started_at[victim] < MIN_UPTIME_S:
                    continue
                proc = system.sup.procs[victim]
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
                    kills += 1
                h = victim[-1]
                system.sup.start(victim, ["worker", "-n", f"w@host-{h}"], hosts[h], own_host(f"host-{h}"))
                started_at[victim] = time.monotonic()

        killing.start()
        envs = [envelope(PROVIDERS[i % 4], f"chaos-{i}") for i in range(N)]
        for i, env in enumerate(envs):
            system.publish(env)
            if i == N // 3:  # one intake dies mid-stream; its entries are reclaimed by the other
                os.killpg(system.sup.procs["intake-a"].pid, signal.SIGKILL)

        def accepted() -> bool:
            with system.engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(ledger.T)).scalar_one() == N

        wait_for(accepted, 600, "every booking accepted")

        # Redis loses everything once the bookings are accepted: queue, stream, results.
        server.terminate()
        server.wait(10)
        server = start_server(port=port)
        system.sup.start("intake-a", ["intake"], hosts["a"], own_host("host-a"))

        def final() -> bool:
            with system.engine.connect() as conn:
                unfinished = conn.execute(
                    select(func.count())
                    .select_from(ledger.T)
                    .where(ledger.C.status.not_in(list(FINAL_STATUSES)))
                ).scalar_one()
            return unfinished == 0

        try:
            wait_for(final, 900, "every booking final")
        except AssertionError:
            # The verdict so far, on the rows that are final (a loaded machine drains slowly).
            done = {r.message_id: r for r in system.rows_for_all() if r.status in FINAL_STATUSES}
            duplicates, problems = judge_from_truth(envs, done, system.sandbox.ground_truth())
            print(
                f"\nnot drained: {progress(system)} worker kills={kills}; among the {len(done)} "
                f"final rows: duplicates={duplicates} problems={problems[:20]}"
            )
            raise
        killer_stop.set()
        killing.join(60)
        wait_for(lambda: len(reader.seen) >= N, 120, "a result for every message")
        # Both hosts consumed the intake stream, each under its own host name.
        consumers = {
            c["name"].decode()
            for c in redis_lib.Redis.from_url(url).xinfo_consumers(
                "ticketrelay:bookings", "ticketrelay-intake"
            )
        }
        assert {c.split("-")[0] + "-" + c.split("-")[1] for c in consumers} == {"host-a", "host-b"}, consumers
    finally:
        killer_stop.set()
        if killing.is_alive():
            killing.join(60)  # never start a worker after the system stopped
        reader.stop.set()
        system.stop()
        server.terminate()
    drained = time.monotonic() - started

    rows = {r.message_id: r for r in system.rows_for_all()}
    truth = system.sandbox.ground_truth()
    lost = sum(1 for env in envs if env["message_id"] not in rows)
    statuses = Counter(str(r.status) for r in rows.values())
    duplicates, problems = judge_from_truth(envs, rows, truth)
    faults = {p: system.sandbox.ground_truth()[p]["faults"] for p in PROVIDERS}
    for row in rows.values():
        if row.status != "issued":
            print(
                f"{row.status}: {row.provider} {row.message_id} attempts={row.attempts} "
                f"{row.error_type}: {row.error_message}"
            )
    print(
        f"\nchaos: bookings={N} statuses={dict(statuses)} faults={faults} worker kills={kills} "
        f"intake kills=1 redis wipes=1 duplicates={duplicates} lost={lost} "
        f"needs_review={statuses.get('needs_review', 0)} drained in {drained:.0f}s"
    )
    assert not problems, "\n".join(problems[:50])
    assert lost == 0 and duplicates == 0
    assert len(rows) == N  # exactly one row per message
    assert not (set(e["message_id"] for e in envs) - reader.seen)  # a result for each
    assert kills >= 1
