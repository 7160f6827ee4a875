"""Celery's thread pool, made to shut down within a bound.

Celery's soft shutdown cancels running requests through `terminate_job`, which the stock
thread pool does not implement ("Unrecoverable error: ... does not implement kill_job"). A
thread cannot be killed, so here cancelling is a no-op for the thread itself: Celery marks the
request cancelled and its unacknowledged message is restored to the queue when the consumer
closes; the call still running is cut off when the process exits (see worker.app's shutdown
watchdog). That call is in doubt, and the lease and stable key make its re-run safe."""

from __future__ import annotations

from typing import Any

from celery.concurrency.thread import TaskPool as _ThreadTaskPool


class ThreadTaskPool(_ThreadTaskPool):
    def terminate_job(self, pid: Any, signal: Any = None) -> None:
        return None

    def on_stop(self) -> None:
        # The stock pool waits here, inside the shutdown signal handler, for every running call
        # to end. Cancel what has not started and return at once.
        self.executor.shutdown(wait=False, cancel_futures=True)
