"""ticketrelay.issue and ticketrelay.sweep. Task names are explicit so the wire format does
not depend on module paths. Tasks take and return no personal data: only the key."""

from __future__ import annotations

from celery import Task

from worker import issuing
from worker.app import ISSUE_TASK, SWEEP_TASK, app, enqueue_issue
from worker.runtime import deps


@app.task(name=ISSUE_TASK, bind=True, acks_late=True)
def issue_ticket(self: Task, idempotency_key: str, bulk: bool = False) -> None:
    follow = issuing.process(deps(), idempotency_key, bulk=bulk)
    if follow.countdown is not None:
        # A new message rather than self.retry(): the ledger, not Celery's retry counter, owns
        # the attempt count, and if this publish fails the sweeper re-drives the row.
        enqueue_issue(idempotency_key, countdown=follow.countdown, bulk=bulk)


@app.task(name=SWEEP_TASK, acks_late=False)
def sweep() -> dict[str, int]:
    return issuing.sweep(deps(), enqueue_issue)
