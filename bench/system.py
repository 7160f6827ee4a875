"""Starts a whole ticketrelay for the benchmark, each part in its own process group, and
measures the processes: Redis (embedded valkey-server, or one given by URL), the sandbox,
intake and Celery workers. Everything started here is killed by `System.stop()`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import psutil
import redis
from sqlalchemy import Engine

ROOT = Path(__file__).resolve().parent.parent
# PostgreSQL's PGSTAT_IDLE_INTERVAL (10 s) and a margin: see System.settle_db_stats.
PG_STATS_IDLE_S = 10.5


class BenchError(RuntimeError):
    """Something did not come up or broke: the benchmark cannot go on."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(
    cond: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: the process exited with code {proc.returncode}")
        with contextlib.suppress(Exception):
            value = cond()
            if value:
                return value
        time.sleep(0.1)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")


def postgres_answers(url: str, timeout_s: int = 3) -> bool:
    """Whether a PostgreSQL server accepts a connection at `url` (within a few seconds)."""
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(url, connect_args={"connect_timeout": timeout_s})
    except Exception:
        return False
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETRELAY_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Names:
    """Redis key names. The product's defaults on a Redis of our own; with a shared Redis
    (--redis-url) every name gets a per-run prefix so nothing of anybody else is touched."""

    intake_stream: str = "ticketrelay:bookings"
    results_stream: str = "ticketrelay:results"
    dead_stream: str = "ticketrelay:dead"
    group: str = "ticketrelay-intake"
    queue: str = "ticketrelay"
    metrics_key: str = "ticketrelay:metrics"
    bulk_queue: str = "ticketrelay.bulk"

    @classmethod
    def unique(cls, run_id: str) -> Names:
        p = f"ticketrelay:bench-{run_id}"
        return cls(
            f"{p}:bookings",
            f"{p}:results",
            f"{p}:dead",
            f"{p}-intake",
            f"{p}-queue",
            f"{p}:metrics",
            f"{p}-bulk",
        )

    def env(self) -> dict[str, str]:
        return {
            "TICKETRELAY_INTAKE_STREAM": self.intake_stream,
            "TICKETRELAY_RESULTS_STREAM": self.results_stream,
            "TICKETRELAY_REPLY_TO_PREFIX": self.results_stream,
            "TICKETRELAY_DEAD_STREAM": self.dead_stream,
            "TICKETRELAY_INTAKE_GROUP": self.group,
            "TICKETRELAY_QUEUE": self.queue,
            "TICKETRELAY_METRICS_KEY": self.metrics_key,
            "TICKETRELAY_BULK_QUEUE": self.bulk_queue,
        }


@dataclass
class Options:
    out_dir: Path
    redis_url: str | None = None
    database_url: str | None = None
    concurrency: int = 64
    workers: int = 1
    # Intake processes on the one bookings stream: one consumer group, a consumer name each.
    intakes: int = 1
    # > 0: these workers consume only the bulk queue and the others only the live queue (the
    # production layout for big nightly runs); 0: every worker consumes both.
    bulk_workers: int = 0
    with_beat: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)


class Processes:
    """Children in their own sessions (process groups); stop() kills every group."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.procs[name] = proc
        return proc

    def check(self, may_exit: tuple[str, ...] = ()) -> None:
        """Raises if a child exited, except those named in `may_exit` (a command that ends)."""
        dead = {n: p.returncode for n, p in self.procs.items() if n not in may_exit and p.poll() is not None}
        if dead:
            raise BenchError(f"process(es) exited: {dead}; see the logs in {self.log_dir}")

    def stop(self, only: list[str] | None = None, timeout: float = 10.0) -> None:
        names = [n for n in self.procs if only is None or n in only]
        for n in names:
            proc = self.procs[n]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for n in names:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.procs[n].wait(max(0.1, deadline - time.monotonic()))
        for n in names:
            proc = self.procs.pop(n)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)


class Monitor:
    """CPU seconds (user+system, children included) and RSS of named PIDs. A sampler thread
    keeps the RSS high-water of the current phase (every 0.2 s); `phase_start()` and
    `phase_end()` give per-phase deltas."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.procs: dict[str, psutil.Process] = {}
        self.peak: dict[str, int] = {}
        self.samples: dict[str, list[tuple[float, int]]] = {}
        self._cpu0: dict[str, float] = {}
        self._sys0: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._thread.start()

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self.procs[name] = psutil.Process(pid)
            self.samples.setdefault(name, [])

    def remove(self, name: str) -> None:
        with self._lock:
            self.procs.pop(name, None)

    def cpu(self, name: str) -> float:
        try:
            t = self.procs[name].cpu_times()
            return t.user + t.system + t.children_user + t.children_system
        except (psutil.Error, KeyError):
            return float("nan")

    def rss(self, name: str) -> int:
        try:
            return int(self.procs[name].memory_info().rss)
        except (psutil.Error, KeyError):
            return 0

    def hwm(self, name: str) -> int:
        """VmHWM: the process's lifetime RSS high-water (Linux)."""
        try:
            for line in Path(f"/proc/{self.procs[name].pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except (OSError, KeyError):
            pass
        return 0

    def sys_cpu(self, name: str) -> float:
        try:
            return float(self.procs[name].cpu_times().system)
        except (psutil.Error, KeyError):
            return float("nan")

    def phase_start(self) -> None:
        with self._lock:
            names = list(self.procs)
        self._cpu0 = {n: self.cpu(n) for n in names}
        self._sys0 = {n: self.sys_cpu(n) for n in names}
        self.peak = {n: self.rss(n) for n in names}

    def phase_end(self) -> dict[str, dict[str, float]]:
        with self._lock:
            names = list(self.procs)
        return {
            n: {
                "cpu_s": self.cpu(n) - self._cpu0.get(n, float("nan")),
                "sys_s": self.sys_cpu(n) - self._sys0.get(n, float("nan")),
                "peak_rss": float(self.peak.get(n, 0)),
            }
            for n in names
        }

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                items = list(self.procs.items())
            now = time.monotonic()
            for name, proc in items:
                try:
                    rss = int(proc.memory_info().rss)
                except psutil.Error:
                    continue
                if rss > self.peak.get(name, 0):
                    self.peak[name] = rss
                self.samples[name].append((now, rss))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)


class System:
    """Redis + sandbox + database + intake + worker(s), started fresh for one benchmark run."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.run_id = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.tmp = Path(tempfile.mkdtemp(prefix="ticketrelay-bench-"))
        self.log_dir = opts.out_dir / "logs"
        if self.log_dir.exists():
            for old in self.log_dir.glob("*.log"):
                old.unlink()
        self.procs = Processes(self.log_dir)
        self.monitor = Monitor()
        self.names = Names.unique(self.run_id) if opts.redis_url else Names()
        self.redis_url = ""
        self.redis_version = "?"
        self.database_url = ""
        self._drop_database: Callable[[], None] | None = None
        self._sqlite_n = 0
        self._stats_engine: Engine | None = None
        self._stats_url = ""
        self.sandbox_url = ""
        self.worker_names: list[str] = []
        self.r: redis.Redis | None = None

    # ---- infrastructure -------------------------------------------------------------------
    def start_redis(self) -> None:
        if self.opts.redis_url:
            self.redis_url = self.opts.redis_url
            self.r = redis.Redis.from_url(self.redis_url, socket_timeout=30)
            try:
                info = self.r.info("server")
            except redis.RedisError as exc:
                raise BenchError(f"no Redis answers at {self.redis_url}: {exc}") from None
            host = urlparse(self.redis_url).hostname or "127.0.0.1"
            if host in ("127.0.0.1", "localhost") and info.get("process_id"):
                with contextlib.suppress(psutil.Error):
                    self.monitor.add("redis", int(info["process_id"]))
        else:
            from worker.devtools.embedded import server_binary

            port = free_port()
            data = self.tmp / "valkey"
            data.mkdir()
            argv = [
                server_binary(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data),
                "--protected-mode",
                "yes",
                "--maxmemory-policy",
                "noeviction",
            ]
            proc = self.procs.start("redis", argv, dict(os.environ), self.tmp)
            self.redis_url = f"redis://127.0.0.1:{port}/0"
            self.r = redis.Redis.from_url(self.redis_url, socket_timeout=30)
            wait_for(self.r.ping, 15, f"the embedded valkey-server on port {port}", proc)
            self.monitor.add("redis", proc.pid)
        info = self.r.info("server")
        self.redis_version = (
            f"{info.get('server_name', 'redis')} {info.get('valkey_version') or info.get('redis_version')}"
        )

    def start_database(self, url: str | None = None) -> None:
        """A fresh, migrated database: `url` (or Options.database_url) names a PostgreSQL
        server (a new database is created on it) or a SQLite file; none: a SQLite file in the
        temp dir, a new one on every call."""
        from worker.ops.migrate import upgrade

        url = url if url is not None else self.opts.database_url
        if url and not url.startswith("sqlite"):
            self.database_url = self._fresh_postgres(url)
        else:
            self._sqlite_n += 1
            self.database_url = url or f"sqlite:///{self.tmp / f'ticketrelay-{self._sqlite_n}.db'}"
        upgrade(self.database_url)

    def drop_database(self) -> None:
        if self._drop_database is not None:
            with contextlib.suppress(Exception):
                self._drop_database()
            self._drop_database = None

    def db_stats(self) -> dict[str, float]:
        """Counters of the current database, for per-booking deltas. PostgreSQL:
        pg_stat_database of the bench database (transactions, tuples) and its size; SQLite:
        the size of the file and its WAL (SQLite counts no statements for other processes)."""
        if self.database_url.startswith("sqlite"):
            from sqlalchemy.engine import make_url

            path = Path(make_url(self.database_url).database or "")
            size = sum(q.stat().st_size for q in (path, Path(f"{path}-wal")) if q.exists())
            return {"db_bytes": float(size)}
        from sqlalchemy import create_engine, text

        if self._stats_engine is None or self._stats_url != self.database_url:
            if self._stats_engine is not None:
                self._stats_engine.dispose()
            # AUTOCOMMIT: every read its own transaction, so no cached statistics snapshot.
            self._stats_engine = create_engine(self.database_url, isolation_level="AUTOCOMMIT")
            self._stats_url = self.database_url
        with self._stats_engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, "
                    "tup_fetched, tup_returned, pg_database_size(datname) AS db_bytes "
                    "FROM pg_stat_database WHERE datname = current_database()"
                )
            ).one()
        return {k: float(v) for k, v in row._mapping.items()}

    def settle_db_stats(self) -> None:
        """PostgreSQL publishes a backend's counters at most once a second while it works and
        up to 10 s after it went idle (PGSTAT_IDLE_INTERVAL), so deltas taken right at the
        end of a phase would miss its tail. Waits that long after the system went quiet."""
        if not self.database_url.startswith("sqlite"):
            time.sleep(PG_STATS_IDLE_S)

    def _fresh_postgres(self, url: str) -> str:
        """A new database on the given server, dropped at the end."""
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        base = make_url(url)
        name = "ticketrelay_bench_" + self.run_id.replace("-", "_")
        admin = create_engine(base, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except Exception as exc:
            raise BenchError(f"cannot create a database on {base.render_as_string()}: {exc}") from None

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

        self._drop_database = drop
        return base.set(database=name).render_as_string(hide_password=False)

    def restart_sandbox(self) -> None:
        """A fresh sandbox (empty provider state), so a later database's run does not meet
        the orders of an earlier one."""
        self.monitor.remove("sandbox")
        self.procs.stop(["sandbox"], timeout=10)
        self.start_sandbox()

    def reset_redis(self, tag: str) -> None:
        """Empties what the previous run left in Redis (streams, queue, group, metrics): the
        embedded server is ours, so FLUSHALL; on a shared one, our keys go and the next run
        gets names of its own."""
        assert self.r is not None
        if self.opts.redis_url:
            self._delete_keys()
            self.names = Names.unique(f"{self.run_id}-{tag}")
        else:
            self.r.flushall()

    def _delete_keys(self) -> None:
        assert self.r is not None
        with contextlib.suppress(redis.RedisError):
            n = self.names
            self.r.delete(
                n.intake_stream, n.results_stream, n.dead_stream, n.queue, n.metrics_key, n.bulk_queue
            )

    def start_sandbox(self) -> None:
        port = free_port()
        argv = [sys.executable, "-m", "worker.devtools.sandbox", "--port", str(port), "--seed", "7"]
        proc = self.procs.start("sandbox", argv, child_env({}), ROOT)
        self.sandbox_url = f"http://127.0.0.1:{port}"
        wait_for(
            lambda: httpx.get(f"{self.sandbox_url}/_sandbox/faults").status_code == 200,
            30,
            "the sandbox",
            proc,
        )
        self.monitor.add("sandbox", proc.pid)

    def set_latency(self, ms: float) -> None:
        resp = httpx.post(f"{self.sandbox_url}/_sandbox/faults", json={"provider": "*", "latency_ms": ms})
        if resp.status_code != 200:
            raise BenchError(f"the sandbox refused latency_ms={ms}: {resp.text}")

    def sandbox_truth(self) -> dict[str, Any]:
        data: dict[str, Any] = httpx.get(f"{self.sandbox_url}/_sandbox/ground-truth", timeout=30).json()
        return data

    # ---- ticketrelay --------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        return child_env(
            {
                "TICKETRELAY_REDIS_URL": self.redis_url,
                "TICKETRELAY_DATABASE_URL": self.database_url,
                "TICKETRELAY_SANDBOX": "1",
                "TICKETRELAY_SANDBOX_URL": self.sandbox_url,
                "TICKETRELAY_STATE_DIR": str(self.tmp / "state"),
                "TICKETRELAY_WORKER_CONCURRENCY": str(self.opts.concurrency),
                "TICKETRELAY_INTAKE_BLOCK_MS": "200",
                **self.names.env(),
                **self.opts.extra_env,
            }
        )

    def start_ticketrelay(self) -> None:
        env = self.env()
        cli = [sys.executable, "-m", "worker.ops.cli"]
        # Intakes share the stream's consumer group (worker/intake.py); each needs its own
        # consumer name, or they would take each other's pending entries for their own.
        for name in self.intake_names():
            proc = self.procs.start(
                name, [*cli, "intake"], {**env, "TICKETRELAY_CONSUMER_NAME": f"bench-{name}"}, self.tmp
            )
            self.monitor.add(name, proc.pid)
        split = self.opts.bulk_workers > 0
        plan = [
            (f"worker{i}" if self.opts.workers > 1 else "worker", self.names.queue if split else None)
            for i in range(1, self.opts.workers + 1)
        ] + [
            (f"bulk-worker{i}" if self.opts.bulk_workers > 1 else "bulk-worker", self.names.bulk_queue)
            for i in range(1, self.opts.bulk_workers + 1)
        ]
        for name, queue in plan:
            queues = ["-Q", queue] if queue else []
            proc = self.procs.start(name, [*cli, "worker", "-n", f"{name}@%h", *queues], env, self.tmp)
            self.worker_names.append(name)
            self.monitor.add(name, proc.pid)
        if self.opts.with_beat:
            proc = self.procs.start("beat", [*cli, "beat"], env, self.tmp)
            self.monitor.add("beat", proc.pid)
        time.sleep(0.5)
        self.procs.check()

    def intake_names(self) -> list[str]:
        n = self.opts.intakes
        return [f"intake{i}" if n > 1 else "intake" for i in range(1, n + 1)]

    def start(self, database_url: str | None = None) -> None:
        self.start_redis()
        self.start_database(database_url)
        self.start_sandbox()

    def stop_ticketrelay(self) -> None:
        """Stops intake, workers and beat (Redis and the sandbox stay), and drops the database."""
        names = [n for n in self.procs.procs if n not in ("redis", "sandbox")]
        for n in names:
            self.monitor.remove(n)
        self.procs.stop(names, timeout=25)
        self.worker_names = []
        if self._stats_engine is not None:
            self._stats_engine.dispose()
            self._stats_engine = None
        self.drop_database()

    def stop(self) -> None:
        self.monitor.close()
        # ticketrelay first, so it does not log Redis going away; then Redis and the sandbox.
        self.procs.stop([n for n in self.procs.procs if n not in ("redis", "sandbox")], timeout=25)
        self.procs.stop(timeout=10)
        if self.opts.redis_url and self.r is not None:
            self._delete_keys()
        if self._stats_engine is not None:
            self._stats_engine.dispose()
        self.drop_database()

    # ---- what went wrong -----------------------------------------------------------------
    def log_findings(self) -> dict[str, int]:
        """Counts of suspicious lines in the children's logs."""
        patterns = {
            "database is locked": "database is locked",
            "Traceback": "Traceback",
            "level error": '"level": "error"',
            "level warning": '"level": "warning"',
            "outcome retry": '"outcome": "retry',
            "skipped/lost claim": '"event": "skipped"',
            "lease_lost": '"event": "lease_lost"',
            "internal_error": "internal_error",
            "redis_error": '"event": "redis_error"',
            "unavailable": '"event": "unavailable"',
            "celery ERROR": " ERROR/",
        }
        found = dict.fromkeys(patterns, 0)
        for path in sorted(self.log_dir.glob("*.log")):
            with path.open(errors="replace") as fh:
                for line in fh:
                    # Our own stop between databases, not something that went wrong.
                    if "Initiating Soft Shutdown" in line:
                        continue
                    for name, pat in patterns.items():
                        if pat in line:
                            found[name] += 1
        return {k: v for k, v in found.items() if v}

    def status_counts(self) -> dict[str, int]:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT status, count(*) FROM ticket_issuances GROUP BY status"))
                return {str(s): int(c) for s, c in rows}
        finally:
            engine.dispose()


def dump_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
