"""Heartbeat files for liveness and readiness probes. A probe then only compares a file's age
(scripts/probe, plain sh): no Python start-up, no broker round trip, no CPU second per probe."""

from __future__ import annotations

import time
from pathlib import Path

from worker.settings import get_settings


def heartbeat_dir() -> Path:
    return get_settings().state_dir / "heartbeat"


class Heartbeat:
    """Touches `<state dir>/heartbeat/<name>` at most once per `every_s` seconds."""

    def __init__(self, name: str, every_s: float = 1.0) -> None:
        self.path = heartbeat_dir() / name
        self.every_s = every_s
        self._last = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError:
            pass  # a read-only or full disk must not stop the work; the probe will say so

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
