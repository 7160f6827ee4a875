"""The benchmark's SQLite / PostgreSQL comparison: which databases run, per-booking deltas,
the side-by-side table."""

from __future__ import annotations

import math

import pytest

from bench.compare import (
    DEFAULT_POSTGRES_URL,
    SIDE_HEADER,
    DbFigures,
    Row,
    choose_databases,
    comparison_rows,
    cpu_ms_per_booking,
    per_booking,
    postgres_url,
    side_by_side,
)
from bench.load import PhaseFigures


def phase(throughput: float, p50: float = 10, p99: float = 100, **extra: object) -> PhaseFigures:
    return PhaseFigures(
        "p", 100, 100, 1.0, throughput, p50, p50, p99, p99, {"issued": 100}, 0, 0, extra=extra
    )


def test_choose_databases_both_when_postgres_answers_else_sqlite_with_a_note() -> None:
    assert choose_databases(None, lambda: True) == (["sqlite", "postgresql"], "")
    dbs, note = choose_databases(None, lambda: False)
    assert dbs == ["sqlite"]
    assert "PostgreSQL did not answer" in note


def test_choose_databases_as_asked_in_order_without_probing() -> None:
    def probe() -> bool:
        raise AssertionError("not probed when asked for")

    assert choose_databases("postgresql, SQLite,postgresql", probe) == (["postgresql", "sqlite"], "")
    with pytest.raises(ValueError, match="mysql"):
        choose_databases("sqlite,mysql", probe)


def test_postgres_url_prefers_the_option_then_the_environment() -> None:
    env = {"TICKETRELAY_BENCH_POSTGRES_URL": "postgresql+psycopg://x@h/db"}
    assert postgres_url("postgresql+psycopg://y@h/db", env) == "postgresql+psycopg://y@h/db"
    assert postgres_url(None, env) == "postgresql+psycopg://x@h/db"
    assert postgres_url(None, {}) == DEFAULT_POSTGRES_URL


def test_per_booking_divides_the_deltas_of_counters_in_both() -> None:
    before = {"xact_commit": 100.0, "tup_inserted": 10.0, "gone": 1.0}
    after = {"xact_commit": 400.0, "tup_inserted": 210.0, "new": 5.0}
    assert per_booking(before, after, 100) == {"xact_commit": 3.0, "tup_inserted": 2.0}
    assert per_booking({"a": 1.0}, {"a": 3.0}, 0) == {"a": 2.0}  # no division by zero


def test_cpu_ms_per_booking_adds_up_processes_of_a_kind() -> None:
    procs = {
        "worker1": {"cpu_s": 2.0},
        "worker2": {"cpu_s": 1.0},
        "intake": {"cpu_s": 0.5},
        "redis": {"cpu_s": math.nan},
    }
    assert cpu_ms_per_booking(procs, 1000) == {"worker": 3.0, "intake": 0.5}


def test_side_by_side_ratio_targets_and_verdicts_per_database() -> None:
    rows = [
        Row("e2e 250 ms throughput", {"sqlite": 200.0, "postgresql": 140.0}, "/s", 150, ratio_target=0.8),
        Row("p99", {"sqlite": 300.0, "postgresql": 100.0}, "ms", 250, higher_is_better=False, digits=0),
    ]
    out = side_by_side(rows, ["sqlite", "postgresql"])
    assert all(len(r) == len(SIDE_HEADER) for r in out)
    assert out[0] == [
        "e2e 250 ms throughput",
        "200.0 /s",
        "140.0 /s",
        "0.70",
        ">= 150 /s; PG/SQLite >= 0.8",
        "PASS / FAIL; ratio FAIL",
    ]
    assert out[1][3:] == ["0.33", "< 250 ms", "FAIL / PASS"]


def test_side_by_side_with_one_database_has_no_ratio() -> None:
    rows = [Row("e2e 0 ms throughput", {"sqlite": 300.0}, "/s", ratio_target=0.8)]
    assert side_by_side(rows, ["sqlite"]) == [
        ["e2e 0 ms throughput", "300.0 /s", "-", "-", "PG/SQLite >= 0.8", "ratio n/a"]
    ]


def test_comparison_rows_take_the_per_booking_figures_of_the_0_ms_burst() -> None:
    def run(tput: float, commits: float) -> DbFigures:
        e0 = phase(
            tput,
            redis_commands_per_booking={"xadd": 1.0, "evalsha": 4.0},
            redis_bytes_per_booking={"to_redis": 900.0, "from_redis": 1200.0},
            db_per_booking={"xact_commit": commits, "db_bytes": 2048.0},
            cpu_ms_per_booking={"worker": 3.0, "intake": 1.0},
        )
        return DbFigures(e0, phase(tput / 2), phase(tput / 4, p99=200))

    rows = {r.label: r for r in comparison_rows({"sqlite": run(400, 0), "postgresql": run(360, 3)}, 800, 250)}
    assert rows["e2e 0 ms throughput"].ratio == pytest.approx(0.9)
    assert rows["e2e 0 ms / baseline A"].values == {"sqlite": 0.5, "postgresql": 0.45}
    assert rows["e2e 250 ms throughput"].values["postgresql"] == 180
    assert rows["per booking (0 ms): Redis commands"].values["sqlite"] == 5.0
    assert rows["per booking: SQL transactions committed"].values["postgresql"] == 3
    assert rows["per booking: CPU ms, all processes"].values["sqlite"] == 4.0
    assert "per booking: rows updated" not in rows  # a counter neither database had
