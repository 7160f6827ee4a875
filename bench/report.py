"""The machine's description, the results table (printed and written as Markdown)."""

from __future__ import annotations

import math
import os
import platform
import sqlite3
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from bench.compare import SIDE_HEADER
from bench.load import PhaseFigures


def machine(redis_version: str, database: str) -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": model,
        "memory": mem,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Celery": version("celery"),
        "kombu": version("kombu"),
        "redis-py": version("redis"),
        "httpx": version("httpx"),
        "SQLAlchemy": version("SQLAlchemy"),
        "Redis server": redis_version,
        "database": database,
        "SQLite library": sqlite3.sqlite_version,
    }


@dataclass
class Target:
    label: str
    actual: float
    target: float
    higher_is_better: bool
    unit: str

    @property
    def ratio(self) -> float:
        if not self.target or math.isnan(self.actual):
            return float("nan")
        return self.actual / self.target if self.higher_is_better else self.target / max(self.actual, 1e-9)

    @property
    def verdict(self) -> str:
        if math.isnan(self.actual):
            return "n/a"
        return "PASS" if self.ratio >= 1 else "FAIL"

    def row(self) -> list[str]:
        op = ">=" if self.higher_is_better else "<"
        return [
            self.label,
            f"{self.actual:.3g} {self.unit}",
            f"{op} {self.target:g} {self.unit}",
            f"{self.ratio:.2f}",
            self.verdict,
        ]


def _f(x: float, digits: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:,.{digits}f}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    right = ["---:" if i else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(right) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = lambda r: "  ".join(  # noqa: E731
        (str(c).ljust(w) if i == 0 else str(c).rjust(w))
        for i, (c, w) in enumerate(zip(r, widths, strict=False))
    )
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)])


PHASE_HEADER = [
    "phase",
    "n",
    "done",
    "seconds",
    "per s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "not issued",
    "lost",
    "dup",
]


def phase_rows(phases: list[PhaseFigures]) -> list[list[str]]:
    rows = []
    for p in phases:
        bad = sum(c for s, c in p.statuses.items() if s not in ("issued", "done"))
        rows.append(
            [
                p.name,
                str(p.n),
                str(p.done),
                _f(p.seconds),
                _f(p.throughput),
                _f(p.p50_ms),
                _f(p.p95_ms),
                _f(p.p99_ms),
                _f(p.max_ms),
                str(bad),
                str(p.missing),
                str(p.duplicates),
            ]
        )
    return rows


PROC_ORDER = ("intake", "worker", "redis", "sandbox", "noop-worker")


def proc_rows(phases: list[PhaseFigures]) -> list[list[str]]:
    rows = []
    for p in phases:
        names = sorted(
            p.procs,
            key=lambda n: (
                PROC_ORDER.index(n.rstrip("0123456789")) if n.rstrip("0123456789") in PROC_ORDER else 99,
                n,
            ),
        )
        for name in names:
            v = p.procs[name]
            sys_share = v.get("sys_s", float("nan")) / v["cpu_s"] * 100 if v["cpu_s"] else float("nan")
            rows.append(
                [p.name, name, _f(p.cpu_per_1000(name), 2), _f(sys_share, 0), _f(v["peak_rss"] / 2**20, 0)]
            )
    return rows


PROC_HEADER = ["phase", "process", "CPU s / 1000", "% system", "peak RSS MiB"]


@dataclass
class Report:
    title: str
    machine: dict[str, str]
    settings: dict[str, str]
    phases: list[PhaseFigures]
    targets: list[Target]
    soak: list[list[str]]
    problems: list[str]
    notes: list[str]
    profile_md: str = ""
    # Rows of bench.compare.SIDE_HEADER: each database's figures and their ratio.
    comparison: list[list[str]] = field(default_factory=list)

    def text(self) -> str:
        parts = [
            self.title,
            "",
            text_table(
                ["target (reported, not asserted)", "actual", "target", "ratio", "verdict"],
                [t.row() for t in self.targets],
            ),
            "",
            text_table(SIDE_HEADER, self.comparison) if self.comparison else "",
            "",
            text_table(PHASE_HEADER, phase_rows(self.phases)),
            "",
            text_table(PROC_HEADER, proc_rows(self.phases)),
            "",
            text_table(["soak", "value"], self.soak) if self.soak else "",
        ]
        if self.problems:
            parts += ["", "FUNCTIONAL PROBLEMS:", *(f"  - {p}" for p in self.problems)]
        if self.notes:
            parts += ["", "notes:", *(f"  - {n}" for n in self.notes)]
        return "\n".join(parts)

    def markdown(self) -> str:
        parts = [
            f"# {self.title}",
            "",
            "Produced by `./scripts/bench` (bench/run.py); figures of one run on the machine below.",
            "",
            "## Machine",
            "",
            md_table(["", ""], [[k, v] for k, v in self.machine.items()]),
            "",
            "## Settings",
            "",
            md_table(["", ""], [[k, v] for k, v in self.settings.items()]),
            "",
            "## Targets (reported, not asserted)",
            "",
            md_table(["target", "actual", "target", "ratio", "verdict"], [t.row() for t in self.targets]),
            "",
        ]
        if self.comparison:
            parts += [
                "## SQLite and PostgreSQL side by side",
                "",
                "Each database's end-to-end phases ran on their own fresh database, Redis and "
                "sandbox. Verdicts: one per database, in column order, then PostgreSQL / SQLite's. "
                "Per booking: deltas over the 0 ms burst divided by the bookings done. Redis "
                "commands and bytes (INFO commandstats, total_net_input/output_bytes) are all "
                "clients', the benchmark's XADD and XREADs included. SQL: pg_stat_database of the "
                "bench database (read after its statistics settle; SQLite keeps no such counters, "
                "and statements are not counted: pg_stat_statements is not loaded); rows fetched "
                "and returned are PostgreSQL's tup_fetched and tup_returned. CPU: user+system of "
                "each kind of process (N workers or intakes added up).",
                "",
                md_table(SIDE_HEADER, self.comparison),
                "",
            ]
        parts += [
            "## Phases",
            "",
            "Latency: from the producer's XADD (t0 in the envelope's metadata) to the result read "
            "with XREAD BLOCK; for the baselines, from send to done. Burst phases publish all "
            "bookings at once, so their latency is mostly queueing.",
            "",
            md_table(PHASE_HEADER, phase_rows(self.phases)),
            "",
            "## CPU and memory per process",
            "",
            "CPU: user+system seconds of the process during the phase per 1,000 bookings (or "
            "tasks/requests). Peak RSS: highest RSS sampled every 0.2 s during the phase.",
            "",
            md_table(PROC_HEADER, proc_rows(self.phases)),
            "",
        ]
        if self.soak:
            parts += ["## Soak", "", md_table(["", ""], self.soak), ""]
        cmd_rows = [
            [
                p.name,
                str(round(sum(p.extra["redis_commands_per_booking"].values()), 1)),
                ", ".join(f"{k} {v:g}" for k, v in p.extra["redis_commands_per_booking"].items()),
            ]
            for p in self.phases
            if p.extra.get("redis_commands_per_booking")
        ]
        if cmd_rows:
            parts += [
                "## Redis commands per booking (INFO commandstats, all clients)",
                "",
                "Includes the benchmark's own XADD (1 per booking) and its XREADs.",
                "",
                md_table(["phase", "total", "by command"], cmd_rows),
                "",
            ]
        if self.profile_md:
            parts += ["## Profile (py-spy, 0 ms)", "", self.profile_md, ""]
        parts += ["## Problems", ""]
        parts += [f"- {p}" for p in self.problems] or ["- none: every booking was issued, none lost"]
        if self.notes:
            parts += ["", "## Notes", "", *(f"- {n}" for n in self.notes)]
        return "\n".join(parts) + "\n"
