"""The chaos test's judge (tests/e2e/test_chaos_e2e.py) counts duplicates from the simulators'
ground truth alone: checked here on bookings driven in-process, one of them by an adapter made
to resend without looking."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.scenarios import Bench
from tests.e2e.test_chaos_e2e import PROVIDERS, judge_from_truth
from tests.helpers import envelope
from worker.db import make_engine
from worker.devtools.sandbox.core import Sandbox
from worker.ops.migrate import upgrade
from worker.providers import get_provider


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    url = f"sqlite:///{tmp_path / 'chaos-judge.db'}"
    upgrade(url)
    engine = make_engine(url)
    bench = Bench(engine)
    bench.sandbox = bench.wire.sandbox = Sandbox(seed=3)  # the worst-case defaults
    yield bench
    engine.dispose()


def book(
    bench: Bench, provider: str, fault: dict[str, Any] | None, envs: list[Any], rows: dict[str, Any]
) -> None:
    key = bench.accept(provider)
    if fault is not None:
        bench.sandbox.set_faults(provider, fail_next=[fault])
    row, problems = bench.drive(key)
    assert not problems
    envs.append(envelope(provider, row.message_id))
    rows[row.message_id] = row


def test_lost_answers_handled_right_count_no_duplicate_and_a_resend_counts_each_ticket(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    envs: list[Any] = []
    rows: dict[str, Any] = {}
    for provider in PROVIDERS:
        book(bench, provider, None, envs, rows)
        book(bench, provider, {"kind": "drop_after_create"}, envs, rows)
    assert judge_from_truth(envs, rows, bench.sandbox.ground_truth()) == (0, [])

    fourvenues = get_provider("fourvenues")
    monkeypatch.setattr(fourvenues, "must_reconcile", lambda attempt: False)
    book(bench, "fourvenues", {"kind": "drop_after_create"}, envs, rows)
    duplicates, problems = judge_from_truth(envs, rows, bench.sandbox.ground_truth())
    assert duplicates == 2  # both tickets of the booking created twice
    assert problems and all(envs[-1]["message_id"] in p for p in problems)
