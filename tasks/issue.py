"""ticketrelay.issue, ticketrelay.issue_batch and ticketrelay.sweep. Task names are explicit so
the wire format does not depend on module paths. Tasks take and return no personal data: only
keys."""

from __future__ import annotations

import math
from collections import defaultdict

from celery import Task

from worker import issuing
from worker.app import ISSUE_BATCH_TASK, ISSUE_TASK, SWEEP_TASK, app, enqueue_issue, enqueue_issue_many
from worker.runtime import batch_runner, deps
from worker.sweep_health import record_sweep_success


@app.task(name=ISSUE_TASK, bind=True, acks_late=True)
def issue_ticket(self: Task, idempotency_key: str, bulk: bool = False) -> None:
    follow = issuing.process(deps(), idempotency_key, bulk=bulk)
    if follow.countdown is not None:
        # A new message rather than self.retry(): the ledger, not Celery's retry counter, owns
        # the attempt count, and if this publish fails the sweeper re-drives the row.
        enqueue_issue(idempotency_key, countdown=follow.countdown, bulk=bulk)


@app.task(name=ISSUE_BATCH_TASK, bind=True, acks_late=True)
def issue_batch(self: Task, idempotency_keys: list[str], bulk: bool = False) -> None:
    follows = issuing.process_many(deps(), idempotency_keys, bulk=bulk, run=batch_runner(bulk))
    # Keys that must come back later travel together again, grouped by when (to 0.1 s, up):
    # a rate-limited bulk batch stays one message instead of becoming sixteen.
    later: dict[float, list[str]] = defaultdict(list)
    for key, follow in follows.items():
        if follow.countdown is not None:
            later[math.ceil(follow.countdown * 10) / 10].append(key)
    for countdown, keys in sorted(later.items()):
        enqueue_issue_many(keys, countdown=countdown, bulk=bulk)


@app.task(name=SWEEP_TASK, acks_late=False)
def sweep() -> dict[str, int]:
    d = deps()
    done = issuing.sweep(d, enqueue_issue)
    record_sweep_success(d.redis, d.settings.metrics_key)  # never raises
    return done
