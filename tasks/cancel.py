"""ticketrelay.cancel: one cancel key (claim-check: only the key travels), a thin wrapper over
worker.cancelling."""

from __future__ import annotations

from celery import Task

from worker import cancelling
from worker.app import CANCEL_TASK, app, enqueue_cancel
from worker.runtime import deps


@app.task(name=CANCEL_TASK, bind=True, acks_late=True)
def cancel_booking(self: Task, idempotency_key: str) -> None:
    follow = cancelling.process_cancel(deps(), idempotency_key)
    if follow.countdown is not None:
        # A waiting cancel (its booking still in flight) or a retry: a new message, as for
        # issuing; if this publish fails the sweeper re-drives the row.
        enqueue_cancel(idempotency_key, countdown=follow.countdown)
