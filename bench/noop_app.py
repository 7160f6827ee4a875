"""Baseline A: a no-op Celery task on ticketrelay's own Celery configuration (worker.app's
make_app: the same broker, thread pool, concurrency, acks_late, prefetch and events), so the
difference to the end-to-end figures is what ticketrelay itself costs.

Worker: `python -m celery -A bench.noop_app:app worker -Q <TICKETRELAY_QUEUE> -E ...` with the
TICKETRELAY_* environment. The task XADDs its argument's send time to BENCH_NOOP_STREAM."""

from __future__ import annotations

import os
from functools import lru_cache

import redis
from celery import Celery

from worker.app import make_app
from worker.settings import Settings, get_settings

NOOP_TASK = "bench.noop"
DEFAULT_STREAM = "bench:noop:done"


def make_noop_app(settings: Settings) -> Celery:
    app = make_app(settings)
    # The product's configuration, less its tasks and the sweeper schedule.
    app.conf.update(include=[], beat_schedule={}, task_default_queue=settings.queue)
    return app


app = make_noop_app(get_settings())


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url)


@app.task(name=NOOP_TASK, acks_late=True)
def noop(t0: str) -> None:
    _redis().xadd(os.environ.get("BENCH_NOOP_STREAM", DEFAULT_STREAM), {"t0": t0})
