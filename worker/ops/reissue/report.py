"""A run's progress while it feeds, and its summary at the end (counts by provider and
outcome, duration, the most frequent failures). Counts and ids only: no personal data."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from schemas.statuses import FINAL_STATUSES
from worker.ops.reissue.selection import Selection
from worker.ops.reissue.store import RunStore


@dataclass
class Progress:
    total: int
    done: int
    by_status: dict[str, int]
    rate: float
    eta_s: float | None


def progress(by_status: dict[str, int], total: int, started: float) -> Progress:
    """`started` is a time.monotonic() reading taken when the run began."""
    done = sum(n for s, n in by_status.items() if s in FINAL_STATUSES)
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = done / elapsed
    eta = (total - done) / rate if rate > 0 and total >= done else None
    return Progress(total=total, done=done, by_status=by_status, rate=rate, eta_s=eta)


def build_report(
    store: RunStore,
    selection: Selection,
    completed: bool,
    started: float,
    driven: int,
    skipped: Counter[str],
) -> dict[str, Any]:
    return {
        "run_id": store.run_id,
        "state": "done" if completed else "stopped",
        "selection": asdict(selection),
        "duration_s": round(time.monotonic() - started, 1),
        "driven": driven,
        "skipped": dict(skipped),
        "by_provider": store.counts_by_provider(),
        "failures": store.failures(),
    }
