"""What a re-issuance run keeps in SQL: its own row in reissue_runs (selection, total, state,
report), and the ticket_issuances rows it drives, always through worker.ledger."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from sqlalchemy import Engine, insert, select, update

from schemas.table import ReissueRun, TicketIssuance
from worker import ledger
from worker.db import writing
from worker.ops.reissue.selection import Selection

R = ReissueRun.__table__  # type: ignore[attr-defined]


class RunStore:
    def __init__(self, engine: Engine, run_id: str) -> None:
        self.engine, self.run_id = engine, run_id

    # --- the run's own row -------------------------------------------------------------------

    def load_or_create(self, selection: Selection) -> Selection | None:
        """Creates the run's row with `selection`, or returns the stored selection of an
        existing run (which is then running again)."""
        now = ledger.utcnow()
        with writing(self.engine) as conn:
            found = conn.execute(select(R).where(R.c.run_id == self.run_id)).mappings().first()
            if found is not None:
                conn.execute(
                    update(R).where(R.c.run_id == self.run_id).values(state="running", updated_at=now)
                )
                return Selection(**found["selection"])
            conn.execute(
                insert(R).values(
                    run_id=self.run_id,
                    created_at=now,
                    updated_at=now,
                    state="running",
                    selection=asdict(selection),
                    total=0,
                )
            )
        return None

    def set_total(self, total: int) -> None:
        with writing(self.engine) as conn:
            conn.execute(
                update(R).where(R.c.run_id == self.run_id).values(total=total, updated_at=ledger.utcnow())
            )

    def save_report(self, report: dict[str, Any], completed: bool) -> None:
        now = ledger.utcnow()
        with writing(self.engine) as conn:
            conn.execute(
                update(R)
                .where(R.c.run_id == self.run_id)
                .values(
                    state=report["state"],
                    report=json.loads(json.dumps(report, default=str)),
                    updated_at=now,
                    finished_at=now if completed else None,
                )
            )

    # --- the rows it drives ------------------------------------------------------------------

    def candidates_count(self, selection: Selection) -> dict[tuple[str, str], int]:
        """What the selection matches now and this run has not driven yet: (provider, status)."""
        return ledger.count_matching(self.engine, selection.row_filter(self.run_id))

    def without_payload(self, selection: Selection) -> int:
        """How many of the selected rows lost their payload (retention): they are skipped."""
        return ledger.count_without_payload(self.engine, selection.row_filter(self.run_id))

    def next_batch(self, selection: Selection, after_id: int, n: int) -> list[TicketIssuance]:
        return ledger.matching_after(self.engine, selection.row_filter(self.run_id), after_id, n)

    def all_candidates(self, selection: Selection, page: int = 1000) -> Iterator[TicketIssuance]:
        """Every candidate row, a page at a time (a night's selection can be large)."""
        after = 0
        while True:
            batch = self.next_batch(selection, after, page)
            if not batch:
                return
            yield from batch
            after = batch[-1].id or after

    def requeue(self, row: TicketIssuance) -> bool:
        return ledger.requeue_for_run(self.engine, row.idempotency_key, row.status, self.run_id)

    def next_generation(self, row: TicketIssuance) -> int:
        return ledger.latest_generation(self.engine, row.provider, row.account, row.message_id) + 1

    def stamp(self, keys: list[str]) -> None:
        ledger.stamp_run(self.engine, keys, self.run_id)

    def in_flight(self) -> int:
        return ledger.active_in_run(self.engine, self.run_id)

    def count_of_run(self, new_generation: bool) -> int:
        # A new-generation run stamps the old row and the new one: count every row then;
        # otherwise the rows it re-drove (generation 0).
        return ledger.count_in_run(self.engine, self.run_id, first_generation_only=not new_generation)

    def counts(self) -> dict[str, int]:
        return ledger.run_counts(self.engine, [self.run_id]).get(self.run_id, {})

    def counts_by_provider(self) -> dict[str, dict[str, int]]:
        return ledger.run_counts_by_provider(self.engine, self.run_id)

    def failures(self) -> list[dict[str, Any]]:
        return ledger.run_failures(self.engine, self.run_id)


def running_runs(engine: Engine) -> list[dict[str, Any]]:
    """Runs in progress with their counts by status, for `ticketrelay status` and metrics."""
    with engine.connect() as conn:
        runs = conn.execute(select(R.c.run_id, R.c.total, R.c.created_at).where(R.c.state == "running")).all()
    counts = ledger.run_counts(engine, [run_id for run_id, _t, _c in runs])
    return [
        {"run_id": run_id, "total": total, "started": created, "by_status": counts.get(run_id, {})}
        for run_id, total, created in runs
    ]
