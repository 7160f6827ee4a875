"""The conformance cases on PostgreSQL: the worst-case corner of every provider, every case,
through the same issue path (the ledger's claim and record statements differ by dialect)."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from tests.conformance.combos import RELEVANT, corners
from tests.conformance.known import known_bug
from tests.conformance.scenarios import CASES, Bench

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("provider", list(RELEVANT))
def test_the_worst_corner_on_postgresql(engine: Engine, provider: str) -> None:
    bench = Bench(engine)
    worst = corners(provider)[0]
    broken = []
    for case in CASES:
        run = bench.run(worst, case)
        expected = known_bug(worst, case)
        if bool(run.violations) != bool(expected):
            broken.append(run.describe() if run.violations else f"{case.name}: fixed? ({expected})")
        if case.name == "clean":
            assert (run.status, run.attempts) == ("issued", 1), run.describe()
    assert not broken, "\n".join(broken)
