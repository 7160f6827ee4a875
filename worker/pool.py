"""Celery's thread pool, made to shut down within a bound.

Celery's soft shutdown cancels running requests through `terminate_job`, which the stock
thread pool does not implement ("Unrecoverable error: ... does not implement kill_job"). A
thread cannot be killed, so here cancelling is a no-op for the thread itself: Celery marks the
request cancelled and its unacknowledged message is restored to the queue when the consumer
closes; the call still running is cut off when the process exits (see worker.app's shutdown
watchdog). That call is in doubt, and the lease and stable key make its re-run safe.

Upstream: celery/celery#10490 ("Threads pool has no terminate_job, so revoke and cold shutdown
don't have expected behavior", open), with a proposed fix in celery/celery#10491 (open);
docs/upstream.md has our reproduction. Celery 5.7.0 already cancels queued futures on stop
(celery/celery#10183) but still waits for the running ones. The subclass is written for the
Celery versions in WRITTEN_FOR: creating the pool (at worker start-up) refuses any other.
"""

from __future__ import annotations

from typing import Any

import celery
from celery.concurrency.thread import TaskPool as _ThreadTaskPool

from worker.workarounds import UnsupportedVersion as UnsupportedVersion
from worker.workarounds import require_reviewed

# The Celery releases whose thread pool (celery/concurrency/thread.py) this was checked against.
WRITTEN_FOR = ("5.7.0",)


def check_version(installed: str) -> None:
    require_reviewed(
        "celery",
        installed,
        WRITTEN_FOR,
        what="the thread pool in worker/pool.py",
        review="does its thread pool implement terminate_job now? does on_stop still wait?",
        remedy="drop the subclass",
    )


class ThreadTaskPool(_ThreadTaskPool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        check_version(celery.__version__)
        super().__init__(*args, **kwargs)

    def terminate_job(self, pid: Any, signal: Any = None) -> None:
        return None

    def on_stop(self) -> None:
        # The stock pool waits here, inside the shutdown signal handler, for every running call
        # to end. Cancel what has not started and return at once.
        self.executor.shutdown(wait=False, cancel_futures=True)
