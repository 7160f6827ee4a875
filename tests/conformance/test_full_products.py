"""The full products of the switches, for the providers where they fit in a slow run:
Fourvenues channels (192 combinations) and e-guma (384, its concurrency-only switches at their
defaults). The Integrations API's 1,728 take several minutes and stay with the pairs design."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from tests.conformance.combos import sequential_product
from tests.conformance.known import known_bug
from tests.conformance.scenarios import CASES, Bench
from worker.db import make_engine
from worker.ops.migrate import upgrade

pytestmark = pytest.mark.slow


@pytest.fixture
def ledger_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path_factory.mktemp('full') / 'ticketrelay.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("provider", ["fourvenues_channels", "eguma"])
def test_every_combination_keeps_the_rules(ledger_engine: Engine, provider: str) -> None:
    bench = Bench(ledger_engine)
    combos = sequential_product(provider)
    unexpected: list[str] = []
    for combo in combos:
        for case in CASES:
            run = bench.run(combo, case)
            known = known_bug(combo, case)
            if run.violations and not known:
                unexpected.append(run.describe())
            elif known and not run.violations:
                unexpected.append(f"{provider} [{combo.id}] {case.name}: passes, but listed as a known bug")
    assert len(combos) == {"fourvenues_channels": 192, "eguma": 384}[provider]
    assert not unexpected, "\n".join(unexpected[:20])
