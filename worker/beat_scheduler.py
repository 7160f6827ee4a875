"""Celery beat's scheduler with a heartbeat, so that beat gets a liveness probe like intake and
the worker (scripts/probe beat MAX_AGE). A beat that is alive but stuck (a hung connection, a
deadlock) stops ticking: its file grows old and the probe fails, where before nothing noticed
until the sweeper-stale alert fired."""

from __future__ import annotations

from typing import Any

from celery.beat import PersistentScheduler

from worker.heartbeat import Heartbeat

# Beat sleeps until the next entry is due (up to beat_max_loop_interval, 300 s by default); a
# tick at least this often keeps the heartbeat fresh for a probe of a minute or two.
MAX_SLEEP_S = 5.0


class HeartbeatScheduler(PersistentScheduler):
    """PersistentScheduler (the default, with its schedule file) that touches
    `<state dir>/heartbeat/beat` on every tick and never sleeps longer than MAX_SLEEP_S."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._heartbeat = Heartbeat("beat", every_s=1.0)
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        self._heartbeat.beat()
        interval = float(super().tick(*args, **kwargs))
        return min(interval, MAX_SLEEP_S)
