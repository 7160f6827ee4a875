"""The conformance suite can fail: an adapter made wrong on purpose breaks the rules it checks,
and the design covers what it says it covers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

from tests.conformance.combos import (
    RELEVANT,
    START,
    Combination,
    all_pairs,
    combinations,
    corners,
    factors,
    full_product,
)
from tests.conformance.scenarios import CASE_BY_NAME, Bench
from worker.db import make_engine
from worker.ops.migrate import upgrade
from worker.providers import get_provider
from worker.providers.base import Outcome, issued
from worker.providers.pipeline import Call


@pytest.fixture
def bench(tmp_path: Any) -> Iterator[Bench]:
    url = f"sqlite:///{tmp_path / 'judge.db'}"
    upgrade(url)
    engine: Engine = make_engine(url)
    yield Bench(engine)
    engine.dispose()


def test_an_adapter_that_resends_without_looking_is_caught(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fourvenues with sent codes kept and repeated codes accepted: a resend after a lost
    answer makes every ticket twice, and the judge says so."""
    fv = get_provider("fourvenues")
    monkeypatch.setattr(fv, "must_reconcile", lambda attempt: False)
    worst = corners("fourvenues")[0]
    combo = Combination(
        "fourvenues",
        tuple((n, "becomes_code" if n == "sent_qr_code" else v) for n, v in worst.switches),
        "cold",
    )
    assert combo.switch_map["duplicate_qr"] == "accept"
    run = bench.run(combo, CASE_BY_NAME["drop"])
    assert run.creation_requests == 2
    assert any(v.startswith("rule 1") for v in run.violations), run.describe()


def test_an_adapter_that_reports_codes_of_its_own_is_caught(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    eguma = get_provider("eguma")
    real = eguma.parse_created

    def invented(call: Call, response: httpx.Response, detail: str | None) -> Outcome:
        outcome = real(call, response, detail)
        return issued([t.model_copy(update={"code": "NOT-FROM-EGUMA"}) for t in outcome.tickets], "x")

    monkeypatch.setattr(eguma, "parse_created", invented)
    run = bench.run(corners("eguma")[0], CASE_BY_NAME["clean"])
    assert any(v.startswith("rule 3") for v in run.violations), run.describe()


def test_an_adapter_that_fails_a_booking_it_created_is_caught(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker.providers.base import failed

    remypass = get_provider("remypass")
    monkeypatch.setattr(remypass, "parse_created", lambda call, response, detail: failed("x", "no"))
    run = bench.run(corners("remypass")[0], CASE_BY_NAME["clean"])
    assert run.status == "failed"
    assert any(v.startswith("rule 2") for v in run.violations), run.describe()


def test_an_adapter_that_claims_issued_without_tickets_is_caught(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    channels = get_provider("fourvenues_channels")
    monkeypatch.setattr(
        channels, "create_request", lambda call: ("GET", "tickets", {"params": {"limit": "1"}})
    )
    monkeypatch.setattr(channels, "parse_created", lambda call, response, detail: issued([], None))
    run = bench.run(corners("fourvenues_channels")[0], CASE_BY_NAME["clean"])
    assert run.status == "issued" and run.creation_requests == 0
    assert any(v.startswith("rule 4") for v in run.violations), run.describe()


@pytest.mark.parametrize("provider", list(RELEVANT))
def test_the_design_covers_every_pair_and_both_corners(provider: str) -> None:
    chosen = combinations(provider)
    rows = [{**c.switch_map, START: c.start} for c in chosen]
    values = factors(provider)
    for a, b in itertools.combinations(values, 2):
        for va, vb in itertools.product(values[a], values[b]):
            assert any(r[a] == va and r[b] == vb for r in rows), (provider, a, va, b, vb)
    assert [c.corner for c in chosen[:2]] == ["worst", "opposite"]
    worst = chosen[0].switch_map
    from worker.devtools.sandbox.switches import SWITCHES

    assert worst == {n: SWITCHES[provider][n].default for n in RELEVANT[provider]}
    assert len({c.id for c in chosen}) == len(chosen)


def test_all_pairs_is_small_and_complete_on_its_own() -> None:
    values: dict[str, tuple[Any, ...]] = {"a": (1, 2, 3), "b": ("x", "y"), "c": (True, False), "d": (0, 1, 2)}
    rows = all_pairs(values)
    assert len(rows) < len(list(itertools.product(*values.values())))
    for a, b in itertools.combinations(values, 2):
        assert {(r[a], r[b]) for r in rows} == set(itertools.product(values[a], values[b]))


def test_the_full_product_folds_only_wording_that_is_unused() -> None:
    combos = full_product("fourvenues_channels")
    accepting = [c for c in combos if c.switch_map["duplicate_qr"] == "accept"]
    refusing = [c for c in combos if c.switch_map["duplicate_qr"] == "refuse"]
    assert {c.switch_map["duplicate_qr_message"] for c in accepting} == {"must_be_unique"}
    assert len({c.switch_map["duplicate_qr_message"] for c in refusing}) == 3
    assert len(refusing) == 3 * len(accepting)
