"""SQLite against PostgreSQL: which databases a run measures, the per-booking figures (deltas
of counters over a phase) and the side-by-side table of the two."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bench.load import PhaseFigures

DATABASES = ("sqlite", "postgresql")
LABELS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
POSTGRES_URL_ENV = "TICKETRELAY_BENCH_POSTGRES_URL"


def postgres_url(explicit: str | None, environ: Mapping[str, str]) -> str:
    """The PostgreSQL server to create bench databases on: --database-url, else the
    environment's TICKETRELAY_BENCH_POSTGRES_URL, else the local server."""
    return explicit or environ.get(POSTGRES_URL_ENV) or DEFAULT_POSTGRES_URL


def choose_databases(requested: str | None, postgres_answers: Callable[[], bool]) -> tuple[list[str], str]:
    """The databases to run, in order, and a note for the report ("" if none). Asked for:
    exactly those (PostgreSQL is not probed: if it does not answer, the run says so). Not
    asked for: both when PostgreSQL answers, else SQLite alone."""
    if requested:
        names = [w.strip().lower() for w in requested.split(",") if w.strip()]
        unknown = [w for w in names if w not in DATABASES]
        if unknown or not names:
            raise ValueError(
                f"--databases: {', '.join(unknown) or 'empty'}; choose from {', '.join(DATABASES)}"
            )
        return list(dict.fromkeys(names)), ""
    if postgres_answers():
        return list(DATABASES), ""
    return [
        "sqlite"
    ], "PostgreSQL did not answer: SQLite only (set TICKETRELAY_BENCH_POSTGRES_URL or --database-url)"


def per_booking(before: Mapping[str, float], after: Mapping[str, float], bookings: int) -> dict[str, float]:
    """(after - before) / bookings for every counter in both."""
    n = max(1, bookings)
    return {k: (after[k] - before[k]) / n for k in after if k in before}


def role(process: str) -> str:
    """worker2 -> worker, intake1 -> intake: the figures of N processes of a kind add up."""
    return process.rstrip("0123456789") or process


def cpu_ms_per_booking(procs: Mapping[str, Mapping[str, float]], bookings: int) -> dict[str, float]:
    """CPU milliseconds (user+system) per booking, by kind of process, over a phase."""
    out: dict[str, float] = {}
    for name, v in procs.items():
        cpu = v.get("cpu_s", math.nan)
        if not math.isnan(cpu):
            out[role(name)] = out.get(role(name), 0.0) + cpu * 1000 / max(1, bookings)
    return out


@dataclass
class Row:
    """One figure for each database; `target` (if any) applies to each, `ratio_target` to
    PostgreSQL / SQLite."""

    label: str
    values: dict[str, float]
    unit: str = ""
    target: float | None = None
    higher_is_better: bool = True
    ratio_target: float | None = None
    digits: int = 1

    def meets(self, value: float) -> bool | None:
        if self.target is None or math.isnan(value):
            return None
        return value >= self.target if self.higher_is_better else value < self.target

    @property
    def ratio(self) -> float:
        pg, lite = self.values.get("postgresql", math.nan), self.values.get("sqlite", math.nan)
        return pg / lite if lite and not math.isnan(lite) else math.nan


SIDE_HEADER = ["figure", *LABELS.values(), "PG/SQLite", "target", "verdict"]


def _num(x: float, digits: int) -> str:
    return "-" if math.isnan(x) else f"{x:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def side_by_side(rows: list[Row], databases: list[str]) -> list[list[str]]:
    """Rows of SIDE_HEADER: a column per database (- for one not run), their ratio, the
    target and the verdicts (one per database run, then the ratio's)."""
    out = []
    for r in rows:
        cells = [r.label]
        for db in DATABASES:
            v = r.values.get(db, math.nan) if db in databases else math.nan
            cells.append(_num(v, r.digits) + (f" {r.unit}" if r.unit and not math.isnan(v) else ""))
        ratio = r.ratio if set(DATABASES) <= set(databases) else math.nan
        cells.append(_num(ratio, 2))
        targets, verdicts = [], []
        if r.target is not None:
            targets.append(f"{'>=' if r.higher_is_better else '<'} {r.target:g} {r.unit}".rstrip())
            verdicts.append(" / ".join(_verdict(r.meets(r.values.get(db, math.nan))) for db in databases))
        if r.ratio_target is not None:
            targets.append(f"PG/SQLite >= {r.ratio_target:g}")
            verdicts.append("ratio " + _verdict(None if math.isnan(ratio) else ratio >= r.ratio_target))
        cells += ["; ".join(targets) or "", "; ".join(verdicts) or ""]
        out.append(cells)
    return out


def ratio(x: float, y: float) -> float:
    """x / y, NaN when y is 0 or either is NaN (a phase that did not run)."""
    return x / y if y and not (math.isnan(x) or math.isnan(y)) else math.nan


@dataclass
class DbFigures:
    """The end-to-end phases of one database."""

    e0: PhaseFigures
    e250: PhaseFigures
    half: PhaseFigures


# The per-booking figures of the 0 ms burst, by their key in PhaseFigures.extra and counter.
_DB_ROWS = (
    ("xact_commit", "SQL transactions committed", 2),
    ("xact_rollback", "SQL transactions rolled back", 2),
    ("tup_inserted", "rows inserted", 2),
    ("tup_updated", "rows updated", 2),
    ("tup_deleted", "rows deleted", 2),
    ("tup_fetched", "rows fetched (by index)", 1),
    ("tup_returned", "rows returned (scans)", 1),
    ("db_bytes", "database size growth, bytes", 0),
)


def comparison_rows(runs: Mapping[str, DbFigures], baseline_a: float, latency_ms: float) -> list[Row]:
    """The figures compared across databases: the targets, then what one booking costs in the
    0 ms burst (Redis, SQL, bytes, CPU), the figures a scale-out projection rests on."""

    def each(get: Callable[[DbFigures], float]) -> dict[str, float]:
        return {db: get(f) for db, f in runs.items()}

    def extra(key: str, sub: str) -> Callable[[DbFigures], float]:
        return lambda f: float(f.e0.extra.get(key, {}).get(sub, math.nan))

    rows = [
        Row("e2e 0 ms throughput", each(lambda f: f.e0.throughput), "/s", ratio_target=0.8),
        Row(
            "e2e 0 ms / baseline A",
            each(lambda f: ratio(f.e0.throughput, baseline_a)),
            "x",
            target=0.5,
            digits=2,
        ),
        Row(
            f"e2e {latency_ms:g} ms throughput",
            each(lambda f: f.e250.throughput),
            "/s",
            150,
            ratio_target=0.8,
        ),
        Row("open loop p50", each(lambda f: f.half.p50_ms), "ms", digits=0),
        Row(
            "open loop p99 (half max)",
            each(lambda f: f.half.p99_ms),
            "ms",
            250,
            higher_is_better=False,
            digits=0,
        ),
        Row(
            "per booking (0 ms): Redis commands",
            each(lambda f: sum(f.e0.extra.get("redis_commands_per_booking", {}).values()) or math.nan),
            digits=1,
        ),
        Row("per booking: bytes to Redis", each(extra("redis_bytes_per_booking", "to_redis")), digits=0),
        Row("per booking: bytes from Redis", each(extra("redis_bytes_per_booking", "from_redis")), digits=0),
    ]
    keys = {k for f in runs.values() for k in f.e0.extra.get("db_per_booking", {})}
    rows += [
        Row(f"per booking: {label}", each(extra("db_per_booking", key)), digits=digits)
        for key, label, digits in _DB_ROWS
        if key in keys
    ]
    roles = sorted({r for f in runs.values() for r in f.e0.extra.get("cpu_ms_per_booking", {})})
    rows += [Row(f"per booking: CPU ms, {r}", each(extra("cpu_ms_per_booking", r)), digits=2) for r in roles]
    rows.append(
        Row(
            "per booking: CPU ms, all processes",
            each(lambda f: sum(f.e0.extra.get("cpu_ms_per_booking", {}).values()) or math.nan),
            digits=2,
        )
    )
    return rows
