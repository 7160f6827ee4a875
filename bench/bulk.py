"""The bulk re-issuance benchmark (GitHub issue "Nightly bulk re-issuance").

A bulk re-issuance of N bookings (100,000) against the sandbox, with a provider latency
(100 ms) and a shared rate limit per provider (TICKETRELAY_DEFAULT_RATE_LIMIT_PER_S, 200/s):

  1. start everything fresh (bench/system.py), warm up;
  2. baseline: live e-guma bookings at a steady low rate (5/s for 20 s) on the intake stream,
     no bulk run: end-to-end p50/p95 (XADD -> result, t0 in the metadata);
  3. setup (not measured): N rows written straight into ticket_issuances as `failed`,
     error_retryable, one transaction per batch;
  4. `./ticketrelay reissue --status failed --report FILE`, as an operator runs it, while live
     bookings go on at the same rate: time to enqueue (until no row of the run is left
     `failed` and unhanded), total duration, live p50/p95 again;
  5. the achieved rate per provider from the sandbox's ground truth against the limit, the
     busiest 1-second window seen by the provider (its last 10,000 arrivals, at the end and at
     half way), every booking created exactly once;
  6. CPU seconds and peak RSS of every process, the reissue command included.

Usage: ./scripts/bench-bulk [--bookings N] [--providers eguma|all] [--rate 200] [--latency-ms 100]
       (or python -m bench.bulk). Writes bench/BULK-RESULTS.md and prints the table.
Exit status: 0 unless something is broken (a booking not issued or lost, created twice, the
rate limit exceeded, the reissue command failing); the 5 % target is reported, not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # `python bench/bulk.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
from sqlalchemy import Engine, insert, text

from bench.load import (
    Envelopes,
    PhaseFigures,
    Publisher,
    ResultReader,
    StalledError,
    Traffic,
    figures,
    parse_result,
    stream_tail,
)
from bench.report import PHASE_HEADER, _f, machine, md_table, phase_rows, text_table
from bench.run import git_state, log
from bench.system import ROOT, BenchError, Options, System, dump_json
from schemas.statuses import Status
from worker import ledger
from worker.db import make_engine
from worker.devtools.demo import demo_envelopes
from worker.ratelimit import RateLimiter
from worker.settings import Settings, sandbox_accounts
from worker.validation import Accepted, validate_entry

HERE = Path(__file__).resolve().parent
ALL_PROVIDERS = ("eguma", "fourvenues", "fourvenues_channels", "remypass")
_burst = inspect.signature(RateLimiter.__init__).parameters
LIVE_BURST_S: float = _burst["live_burst_s"].default
BULK_RESERVE_S: float = _burst["bulk_reserve_s"].default


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench-bulk", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bookings", type=int, default=100_000, help="rows to re-issue (100000)")
    p.add_argument(
        "--providers",
        choices=("eguma", "all"),
        default="eguma",
        help="bulk rows for e-guma only (default: the limit of one provider is what is measured) "
        "or round-robin over all four",
    )
    p.add_argument("--rate", type=float, default=200.0, help="TICKETRELAY_DEFAULT_RATE_LIMIT_PER_S (200)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="sandbox latency of every provider (100)")
    p.add_argument("--concurrency", type=int, default=64, help="TICKETRELAY_WORKER_CONCURRENCY (64)")
    p.add_argument("--workers", type=int, default=1, help="Celery worker processes (1)")
    p.add_argument(
        "--bulk-workers",
        type=int,
        default=0,
        help="worker processes for the bulk queue only; the --workers then take live work only "
        "(0: every worker takes both queues)",
    )
    p.add_argument("--window", type=int, help="TICKETRELAY_REISSUE_WINDOW (the product's default, 200)")
    p.add_argument("--live-rate", type=float, default=5.0, help="live e-guma bookings per second (5)")
    p.add_argument("--baseline-s", type=float, default=20.0, help="seconds of the no-bulk baseline (20)")
    p.add_argument("--batch", type=int, default=5000, help="rows per transaction in the setup (5000)")
    p.add_argument("--redis-url", help="use this Redis instead of an embedded valkey-server")
    p.add_argument("--database-url", help="PostgreSQL server URL (a fresh database is created and dropped)")
    p.add_argument("--note", action="append", default=[], help="a line for the report's notes (repeatable)")
    p.add_argument("--out", type=Path, default=HERE / "out" / "bulk", help="logs, reissue report, JSON")
    p.add_argument("--results", type=Path, default=HERE / "BULK-RESULTS.md", help="the Markdown report")
    return p.parse_args(argv)


# ---- setup: N failed rows --------------------------------------------------------------------------


def create_failed_rows(system: System, n: int, providers: tuple[str, ...], batch: int) -> tuple[int, int]:
    """N `failed`, retryable rows as a worker would have left them after a provider outage,
    written in one transaction per `batch` rows. Their metadata carries no t0, so the live
    result reader ignores their results. Returns the (first, last) row id."""
    engine = make_engine(system.database_url, pool_size=1)
    settings, accounts = Settings(), sandbox_accounts(system.sandbox_url)
    templates = {e["provider"]: e for e in demo_envelopes(system.run_id)}
    prefix = f"bulk-{system.run_id}-"
    try:
        for start in range(0, n, batch):
            now = ledger.utcnow()
            rows = []
            for i in range(start, min(n, start + batch)):
                provider = providers[i % len(providers)]
                env = dict(templates[provider], message_id=f"{prefix}{i}", metadata={"phase": "bulk"})
                if provider == "remypass":
                    env["payload"] = {**env["payload"], "bookingId": f"BK-{prefix}{i}"}
                verdict = validate_entry({"message": json.dumps(env).encode()}, settings, accounts)
                if not isinstance(verdict, Accepted):
                    raise BenchError(f"setup: a bulk envelope was rejected: {verdict}")
                values = ledger._row_values(verdict.booking(), Status.FAILED, now)
                values.update(
                    reply_to=system.names.results_stream,
                    attempts=1,
                    completed_at=now,
                    callback_sent_at=now,
                    error_type="provider_unavailable",
                    error_message="bench: provider unavailable (set up by bench/bulk.py)",
                    http_status=503,
                    error_retryable=True,
                )
                rows.append(values)
            with engine.begin() as conn:
                conn.execute(insert(ledger.T), rows)
        with engine.connect() as conn:
            lo, hi, count = conn.execute(
                text("SELECT min(id), max(id), count(*) FROM ticket_issuances WHERE message_id LIKE :p"),
                {"p": prefix + "%"},
            ).one()
    finally:
        engine.dispose()
    if count != n or hi - lo + 1 != n:
        raise BenchError(f"setup: {count} rows written, ids {lo}..{hi}, expected {n} contiguous")
    return int(lo), int(hi)


# ---- the reissue command ---------------------------------------------------------------------------


@dataclass
class ReissueRun:
    """`./ticketrelay reissue` as a child; a watcher thread reaps it (wait4: exact CPU and peak
    RSS) and polls the database for the moment the last row was handed over."""

    system: System
    rows: tuple[int, int]
    report_path: Path
    t0: float = 0.0
    t_handed_over: float | None = None
    t_end: float | None = None
    exit_code: int | None = None
    cpu_s: float = math.nan
    maxrss: int = 0
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, unhanded, issued)
    half_truth: dict[str, Any] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def start(self) -> None:
        argv = [str(ROOT / "ticketrelay"), "reissue", "--status", "failed", "--report", str(self.report_path)]
        self.t0 = time.monotonic()
        proc = self.system.procs.start("reissue", argv, self.system.env(), self.system.tmp)
        self.system.monitor.add("reissue", proc.pid)
        threading.Thread(target=self._watch, args=(proc.pid,), name="bench-reissue", daemon=True).start()

    def _watch(self, pid: int) -> None:
        engine = make_engine(self.system.database_url, pool_size=1)
        n = self.rows[1] - self.rows[0] + 1
        query = text(
            "SELECT sum(CASE WHEN status = 'failed' AND reissue_run IS NULL THEN 1 ELSE 0 END), "
            "sum(CASE WHEN status = 'issued' THEN 1 ELSE 0 END) "
            "FROM ticket_issuances WHERE id BETWEEN :lo AND :hi"
        )
        try:
            next_poll = 0.0
            while True:
                wpid, status, ru = os.wait4(pid, os.WNOHANG)
                now = time.monotonic()
                if wpid:
                    self.t_end = now
                    self.exit_code = os.waitstatus_to_exitcode(status)
                    self.cpu_s = ru.ru_utime + ru.ru_stime
                    self.maxrss = ru.ru_maxrss * 1024
                    proc = self.system.procs.procs.pop("reissue")
                    proc.returncode = self.exit_code
                    break
                if now >= next_poll:
                    with engine.connect() as conn:
                        unhanded, issued = conn.execute(query, {"lo": self.rows[0], "hi": self.rows[1]}).one()
                    self.samples.append((now - self.t0, int(unhanded or 0), int(issued or 0)))
                    if self.t_handed_over is None and not unhanded:
                        self.t_handed_over = now
                    if self.half_truth is None and (issued or 0) >= n // 2:
                        self.half_truth = arrivals_only(self.system.sandbox_truth())
                    next_poll = now + (0.5 if self.t_handed_over is None else 2.0)
                time.sleep(0.1)
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            engine.dispose()
            self.done.set()


def arrivals_only(truth: dict[str, Any]) -> dict[str, Any]:
    return {p: {"requests": t["requests"], "recent_arrivals": t["recent_arrivals"]} for p, t in truth.items()}


def max_in_window(arrivals: list[float], window_s: float = 1.0) -> tuple[int, float]:
    """The most arrivals in any window [t, t + window_s), and where it starts."""
    a = sorted(arrivals)
    best, at, j = 0, math.nan, 0
    for i, t in enumerate(a):
        while j < len(a) and a[j] < t + window_s:
            j += 1
        if j - i > best:
            best, at = j - i, t
    return best, at


# ---- the live traffic --------------------------------------------------------------------------------


class Live:
    """Live e-guma bookings on the intake stream at a steady rate."""

    def __init__(self, system: System) -> None:
        assert system.r is not None
        self.system, self.r = system, system.r
        self.pub = Publisher(self.r, system.names.intake_stream, Envelopes(system.run_id, ("eguma",)))
        self.sent = 0

    def _reader(self) -> ResultReader:
        stream = self.system.names.results_stream
        return ResultReader(self.r, stream, stream_tail(self.r, stream), parse_result)

    def check(self) -> None:
        self.system.procs.check(may_exit=("reissue",))

    def warmup(self, n: int = 40) -> None:
        reader = self._reader()
        traffic = Traffic("warmup")
        self.pub.burst(traffic, n)
        missing = reader.wait(set(traffic.sent), 90, self.check)
        reader.stop()
        self.sent += n
        if missing:
            raise BenchError(f"warm-up: {len(missing)} of {n} bookings got no result")

    def steady(
        self, name: str, rate: float, seconds: float | None, until: threading.Event | None
    ) -> PhaseFigures:
        reader = self._reader()
        traffic = Traffic(name)
        n = int(rate * seconds) if seconds is not None else sys.maxsize
        self.pub.at_rate(traffic, n, rate, self.check, until.is_set if until is not None else None)
        self.sent += len(traffic.sent)
        missing = reader.wait(set(traffic.sent), 120, self.check)
        fig = figures(name, traffic, reader, missing)
        reader.stop()
        log(
            f"{name}: {fig.done}/{fig.n}, p50 {fig.p50_ms:.0f} ms, p95 {fig.p95_ms:.0f} ms, "
            f"p99 {fig.p99_ms:.0f} ms, statuses {fig.statuses}"
        )
        return fig


# ---- the run ---------------------------------------------------------------------------------------------


def mib(b: float) -> str:
    return _f(b / 2**20, 0) if b else "-"


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    providers = ALL_PROVIDERS if args.providers == "all" else ("eguma",)
    extra = {"TICKETRELAY_DEFAULT_RATE_LIMIT_PER_S": f"{args.rate:g}"}
    if args.window:
        extra["TICKETRELAY_REISSUE_WINDOW"] = str(args.window)
    opts = Options(
        out_dir=args.out,
        redis_url=args.redis_url,
        database_url=args.database_url,
        concurrency=args.concurrency,
        workers=args.workers,
        bulk_workers=args.bulk_workers,
        extra_env=extra,
    )
    code_state = git_state()
    system = System(opts)
    problems: list[str] = []
    notes: list[str] = list(args.note)
    figures_rows: list[list[str]] = []
    rate_rows: list[list[str]] = []
    proc_rows: list[list[str]] = []
    live_phases: list[PhaseFigures] = []
    data: dict[str, Any] = {}
    limit_burst = args.rate * (1 + LIVE_BURST_S)
    try:
        log(f"starting Redis, database and sandbox (temp dir {system.tmp}, logs {system.log_dir})")
        system.start()
        system.set_latency(args.latency_ms)
        log(
            f"starting intake and {args.workers} worker(s) x {args.concurrency} threads, "
            f"limit {args.rate:g}/s"
        )
        system.start_ticketrelay()
        system.monitor.add("bench", os.getpid())
        live = Live(system)
        live.warmup()

        # ---- 2. baseline --------------------------------------------------------------------------
        system.monitor.phase_start()
        base = live.steady(f"live {args.live_rate:g}/s, no bulk run", args.live_rate, args.baseline_s, None)
        base_procs = system.monitor.phase_end()
        live_phases.append(base)

        # ---- 3. setup ----------------------------------------------------------------------------------
        log(f"setup: writing {args.bookings} failed rows ({', '.join(providers)})")
        t = time.monotonic()
        rows = create_failed_rows(system, args.bookings, providers, args.batch)
        setup_s = time.monotonic() - t
        log(f"setup: {args.bookings} rows in {setup_s:.1f} s")
        truth0 = arrivals_only(system.sandbox_truth())

        # ---- 4. the reissue, with live traffic -------------------------------------------------------
        system.monitor.phase_start()
        busy0, load = busy_cpu_s(), [os.getloadavg()[0]]
        reissue = ReissueRun(system, rows, args.out / "reissue-report.json")
        log("reissue: ./ticketrelay reissue --status failed (progress in logs/reissue.log)")
        reissue.start()
        during = live.steady(
            f"live {args.live_rate:g}/s, during the bulk run", args.live_rate, None, reissue.done
        )
        reissue.done.wait()
        bulk_procs = system.monitor.phase_end()
        busy = busy_cpu_s() - busy0
        load.append(os.getloadavg()[0])
        live_phases.append(during)
        if reissue.error is not None:
            raise BenchError(f"watching the reissue: {reissue.error!r}")
        assert reissue.t_end is not None
        duration = reissue.t_end - reissue.t0
        enqueue = (reissue.t_handed_over or math.nan) - reissue.t0
        log(
            f"reissue: exit {reissue.exit_code}, handed over after {enqueue:.1f} s, "
            f"done after {duration:.1f} s"
        )
        if reissue.exit_code != 0:
            problems.append(f"the reissue command exited with {reissue.exit_code}: see {system.log_dir}")

        # ---- 5. rate and integrity ----------------------------------------------------------------------
        truth = system.sandbox_truth()
        rates = [
            provider_rate(p, truth, truth0, reissue.half_truth, duration, during.n if p == "eguma" else 0)
            for p in providers
        ]
        rate_rows = [
            [
                r.provider,
                str(r.requests),
                str(r.bulk_requests),
                _f(r.achieved),
                _f(r.steady),
                f"{r.achieved / args.rate * 100:.0f} %",
                str(r.max_1s),
                "yes" if r.max_1s <= limit_burst else "NO",
            ]
            for r in rates
        ]
        creations: dict[str, dict[str, int]] = {}
        for r in rates:
            if r.max_1s > limit_burst:
                problems.append(
                    f"{r.provider}: {r.max_1s} requests in one second at the provider, above the limit "
                    f"{args.rate:g}/s + live burst ({limit_burst:g})"
                )
            expected = sum(1 for i in range(args.bookings) if providers[i % len(providers)] == r.provider)
            expected += live.sent if r.provider == "eguma" else 0
            by_request = truth[r.provider].get("creations_by_request", {})
            twice = sum(1 for c in truth[r.provider].get("creations", {}).values() if c > 1)
            twice += sum(1 for c in by_request.values() if c > 1)
            creations[r.provider] = {"created": len(by_request), "expected": expected, "twice": twice}
            if len(by_request) != expected or twice:
                problems.append(
                    f"{r.provider}: {len(by_request)} bookings created at the provider, expected "
                    f"{expected}; {twice} created more than once"
                )

        counts = bulk_counts(system.database_url, rows)
        if counts != {"issued": args.bookings}:
            problems.append(f"bulk rows not all issued at the end: {counts}")
        for ph in live_phases:
            problems += ph.functional_problems
        target_met = all(r.achieved >= args.rate * 0.95 for r in rates)
        within = all(r.max_1s <= limit_burst for r in rates)
        figures_rows = [
            ["bookings re-issued (N)", f"{args.bookings:,}", ", ".join(providers)],
            ["setup (not a figure): N failed rows", f"{setup_s:.1f} s", f"{args.batch} rows per transaction"],
            ["time to enqueue (last row handed over)", f"{enqueue:.1f} s", "from the command's start"],
            [
                "total duration (until the command exits)",
                f"{duration:.1f} s",
                f"{args.bookings / duration:.1f} bookings/s overall",
            ],
            [
                "achieved rate per provider vs limit",
                ", ".join(f"{r.provider} {r.achieved:.1f}/s" for r in rates),
                f"limit {args.rate:g}/s; target >= {args.rate * 0.95:g}/s: "
                + ("met" if target_met else "NOT met"),
            ],
            [
                "busiest 1 s at the provider",
                ", ".join(f"{r.provider} {r.max_1s}" for r in rates),
                f"<= {limit_burst:g} (limit + live burst {LIVE_BURST_S:g} s; "
                f"bulk paced, reserving {BULK_RESERVE_S:g} s ahead): " + ("within" if within else "EXCEEDED"),
            ],
            [
                "live p95, no bulk run",
                f"{base.p95_ms:.0f} ms",
                f"p50 {base.p50_ms:.0f} ms; {base.n} bookings at {args.live_rate:g}/s",
            ],
            [
                "live p95, during the bulk run",
                f"{during.p95_ms:.0f} ms",
                f"p50 {during.p50_ms:.0f} ms; {during.n} bookings; "
                f"x{during.p95_ms / base.p95_ms:.1f} the baseline's p95",
            ],
            [
                "created at the provider / expected",
                ", ".join(f"{p} {v['created']}/{v['expected']}" for p, v in creations.items()),
                "none twice" if not any(v["twice"] for v in creations.values()) else "DUPLICATES",
            ],
        ]
        data["creations"] = creations

        # ---- 6. processes ------------------------------------------------------------------------------
        if "bench" in bulk_procs:  # its CPU counts reaped children: the reissue command
            bulk_procs["bench"]["cpu_s"] -= reissue.cpu_s
        sampled = bulk_procs.setdefault("reissue", {}).get("peak_rss", 0.0)
        bulk_procs["reissue"].update(cpu_s=reissue.cpu_s, peak_rss=float(max(reissue.maxrss, sampled)))
        done_bulk = args.bookings + during.n
        for name in sorted(bulk_procs, key=proc_order):
            b = bulk_procs[name]
            hwm = reissue.maxrss if name == "reissue" else system.monitor.hwm(name)
            proc_rows.append(
                [
                    name,
                    mib(base_procs.get(name, {}).get("peak_rss", 0)),
                    mib(b.get("peak_rss", 0)),
                    mib(hwm),
                    _f(b.get("cpu_s", math.nan)),
                    _f(b.get("cpu_s", math.nan) / done_bulk * 1000, 2),
                ]
            )

        ours = sum(v.get("cpu_s", 0.0) for v in bulk_procs.values() if not math.isnan(v.get("cpu_s", 0.0)))
        other = busy - ours
        notes.append(
            f"CPU of the whole machine during the bulk phase: {busy:.0f} s busy of "
            f"{duration * (os.cpu_count() or 1):.0f} s available; processes not started by this "
            f"benchmark used {max(other, 0):.0f} s of it; 1-min load average {load[0]:.1f} at the "
            f"start, {load[1]:.1f} at the end"
        )
        if other > 0.1 * duration:
            notes.append(
                "WARNING: other processes used the CPU during the run: the rates and latencies "
                "above are lower/higher than on an idle machine"
            )
        findings = system.log_findings()
        if findings:
            notes.append(
                f"log lines in {system.log_dir}: " + ", ".join(f"{k}: {v}" for k, v in findings.items())
            )
        notes.append(f"rows in ticket_issuances by status at the end: {system.status_counts()}")
        with contextlib.suppress(OSError, ValueError):
            rep = json.loads(reissue.report_path.read_text())
            notes.append(
                f"reissue report: run {rep['run_id']}, state {rep['state']}, driven {rep['driven']}, "
                f"skipped {rep['skipped']}, duration {rep['duration_s']} s, "
                f"failures {rep['failures'] or 'none'}"
            )
        data.update(
            setup_s=setup_s,
            enqueue_s=enqueue,
            duration_s=duration,
            rate=[vars(r) for r in rates],
            samples=reissue.samples,
            live=[vars(p) for p in live_phases],
            procs={"baseline": base_procs, "bulk": bulk_procs},
        )
    except (BenchError, StalledError) as exc:
        problems.append(f"broken: {exc}")
        log(f"ERROR: {exc}")
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        log("stopping every process")
        system.stop()

    database = (
        "PostgreSQL (a fresh database)"
        if system.database_url.startswith("postgres")
        else "SQLite file in a temp dir (WAL)"
    )
    settings = {
        "code measured": code_state,
        "bookings (N)": f"{args.bookings:,}",
        "bulk providers": ", ".join(providers),
        "rate limit": f"{args.rate:g} requests/s per provider account (TICKETRELAY_DEFAULT_RATE_LIMIT_PER_S)",
        "provider latency": f"{args.latency_ms:g} ms (sandbox fault latency_ms, every provider)",
        "worker processes x threads": f"{args.workers} x {args.concurrency}"
        + (f" live only, + {args.bulk_workers} bulk only" if args.bulk_workers else ", both queues"),
        "reissue window": str(args.window or Settings.model_fields["reissue_window"].default),
        "live traffic": f"e-guma on the intake stream, {args.live_rate:g}/s; baseline {args.baseline_s:g} s",
        "Redis": args.redis_url or "embedded valkey-server, a fresh one",
        "database": database,
    }
    md = markdown(
        args, system, settings, figures_rows, rate_rows, live_phases, proc_rows, problems, notes, database
    )
    print()
    print(text_report(figures_rows, rate_rows, live_phases, proc_rows, problems, notes))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(md)
    dump_json(args.out / "bulk-results.json", {"settings": settings, "problems": problems, **data})
    log(f"wrote {args.results} and {args.out / 'bulk-results.json'}")
    return 1 if problems else 0


@dataclass
class ProviderRate:
    provider: str
    requests: int  # during the bulk phase, live included
    bulk_requests: int
    achieved: float  # requests / duration
    steady: float
    max_1s: int


def provider_rate(
    provider: str,
    truth: dict[str, Any],
    truth0: dict[str, Any],
    half: dict[str, Any] | None,
    duration: float,
    live: int,
) -> ProviderRate:
    req = truth[provider]["requests"] - truth0[provider]["requests"]
    arrivals = set(truth[provider]["recent_arrivals"])
    if half is not None:
        arrivals |= set(half[provider]["recent_arrivals"])
    return ProviderRate(
        provider=provider,
        requests=req,
        bulk_requests=req - live,
        achieved=req / duration,
        steady=steady_rate(half, provider) if half is not None else math.nan,
        max_1s=max_in_window(list(arrivals))[0],
    )


def steady_rate(half: dict[str, Any], provider: str) -> float:
    """Requests per second over the 10,000 arrivals before half way: the steady state."""
    a = sorted(half[provider]["recent_arrivals"])
    return (len(a) - 1) / (a[-1] - a[0]) if len(a) > 1 and a[-1] > a[0] else math.nan


def busy_cpu_s() -> float:
    """CPU seconds the whole machine spent not idle since boot."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def bulk_counts(url: str, rows: tuple[int, int]) -> dict[str, int]:
    engine: Engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            res = conn.execute(
                text(
                    "SELECT status, count(*) FROM ticket_issuances "
                    "WHERE id BETWEEN :lo AND :hi GROUP BY status"
                ),
                {"lo": rows[0], "hi": rows[1]},
            )
            return {str(s): int(c) for s, c in res}
    finally:
        engine.dispose()


ORDER = ("intake", "worker", "reissue", "redis", "sandbox", "bench")


def proc_order(name: str) -> tuple[int, str]:
    base = name.rstrip("0123456789")
    return (ORDER.index(base) if base in ORDER else 99, name)


FIG_HEADER = ["figure", "value", "detail"]
RATE_HEADER = [
    "provider",
    "requests",
    "of them bulk",
    "achieved /s (whole run)",
    "steady /s (10k before half way)",
    "of the limit",
    "max in 1 s",
    "within limit + burst",
]
PROC_HEADER = [
    "process",
    "peak RSS MiB (baseline)",
    "peak RSS MiB (bulk)",
    "VmHWM MiB",
    "CPU s (bulk)",
    "CPU s / 1000",
]


def text_report(
    fig: list[list[str]],
    rate: list[list[str]],
    live: list[PhaseFigures],
    procs: list[list[str]],
    problems: list[str],
    notes: list[str],
) -> str:
    parts = [
        "ticketrelay bulk re-issuance benchmark",
        "",
        text_table(FIG_HEADER, fig) if fig else "(no figures)",
        "",
        text_table(RATE_HEADER, rate) if rate else "",
        "",
        text_table(PHASE_HEADER, phase_rows(live)) if live else "",
        "",
        text_table(PROC_HEADER, procs) if procs else "",
    ]
    if problems:
        parts += ["", "PROBLEMS:", *(f"  - {p}" for p in problems)]
    if notes:
        parts += ["", "notes:", *(f"  - {n}" for n in notes)]
    return "\n".join(parts)


def markdown(
    args: argparse.Namespace,
    system: System,
    settings: dict[str, str],
    fig: list[list[str]],
    rate: list[list[str]],
    live: list[PhaseFigures],
    procs: list[list[str]],
    problems: list[str],
    notes: list[str],
    database: str,
) -> str:
    parts = [
        f"# ticketrelay bulk re-issuance benchmark ({time.strftime('%Y-%m-%d %H:%M')})",
        "",
        'Produced by `./scripts/bench-bulk` (bench/bulk.py), GitHub issue "Nightly bulk '
        're-issuance"; figures of one run on the machine below.',
        "",
        "## Machine",
        "",
        md_table(["", ""], [[k, v] for k, v in machine(system.redis_version, database).items()]),
        "",
        "## Settings",
        "",
        md_table(["", ""], [[k, v] for k, v in settings.items()]),
        "",
        "## Figures",
        "",
        md_table(FIG_HEADER, fig) if fig else "(none: the run broke, see Problems)",
        "",
        "## Rate at the provider (sandbox ground truth)",
        "",
        "Requests: all requests the provider received between the reissue command's start and its "
        "exit (live ones included), divided by that duration. Steady: the 10,000 arrivals before "
        "half of the rows were issued. Max in 1 s: the busiest window [t, t + 1 s) among the "
        "provider's last 10,000 arrivals at half way and at the end (the sandbox keeps no more).",
        "",
        md_table(RATE_HEADER, rate) if rate else "",
        "",
        "## Live bookings",
        "",
        "End to end: the producer's XADD (t0 in the metadata) to the result read with XREAD BLOCK.",
        "",
        md_table(PHASE_HEADER, phase_rows(live)) if live else "",
        "",
        "## Processes",
        "",
        "Peak RSS: sampled every 0.2 s during the phase; VmHWM: the process's lifetime high-water "
        "(the reissue command: ru_maxrss from wait4, and its CPU from wait4 too). CPU: user + "
        "system seconds during the bulk phase, per 1,000 bookings of that phase (bulk + live).",
        "",
        md_table(PROC_HEADER, procs) if procs else "",
        "",
        "## Problems",
        "",
        *([f"- {p}" for p in problems] or ["- none: every booking issued, each created once, limit kept"]),
    ]
    if notes:
        parts += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
