"""Provider conformance: every adapter, every in-doubt case, every chosen combination of its
simulator's switches (combos.py), through the real issue path on SQLite, judged from the
simulator's ground truth (scenarios.judge). docs/providers.md holds the table of outcomes
(`python -m tests.conformance.report` writes it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.conformance.combos import RELEVANT, Combination, combinations
from tests.conformance.known import known_bug
from tests.conformance.scenarios import CASES, Bench, Case
from worker.db import make_engine
from worker.ops.migrate import upgrade


def _params() -> list[object]:
    params: list[object] = []
    for provider in RELEVANT:
        for combo in combinations(provider):
            for case in CASES:
                reason = known_bug(combo, case)
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                params.append(pytest.param(combo, case, id=f"{provider}-{combo.id}-{case.name}", marks=marks))
    return params


@pytest.fixture(scope="module")
def ledger_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One migrated SQLite ledger for the module: every run books under a message id of its own."""
    url = f"sqlite:///{tmp_path_factory.mktemp('conformance') / 'ticketrelay.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def bench(ledger_engine: Engine) -> Bench:
    return Bench(ledger_engine)


@pytest.mark.parametrize(("combo", "case"), _params())
def test_a_booking_in_doubt_is_never_issued_twice_nor_misreported(
    bench: Bench, combo: Combination, case: Case
) -> None:
    run = bench.run(combo, case)
    assert not run.violations, run.describe()
    if case.name == "clean":
        # The control: without a fault, every combination issues, in one call.
        assert (run.status, run.attempts) == ("issued", 1), run.describe()
