"""The sandbox's clock: wall time plus an offset that tests move forward.

Everything that expires (e-guma idempotency records after 72 hours, reservations after 60
minutes, "the start is still in the future") reads this clock, so a test can jump three days
ahead instead of waiting.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

# e-guma is a Swiss service: its slot times and .NET timestamps carry no zone and are local.
EGUMA_ZONE = ZoneInfo("Europe/Zurich")


class Clock:
    def __init__(self) -> None:
        self.offset_s = 0.0

    def now(self) -> float:
        """Seconds since the epoch, as the simulated providers see it."""
        return time.time() + self.offset_s

    def advance(self, seconds: float) -> None:
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            raise ValueError("the clock only moves forward: advance_s must be a number >= 0")
        self.offset_s += float(seconds)

    def reset(self) -> None:
        self.offset_s = 0.0

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now(), UTC)

    def local(self) -> datetime:
        """Naive local time in e-guma's zone (how its slots are written)."""
        return datetime.fromtimestamp(self.now(), EGUMA_ZONE).replace(tzinfo=None)


def iso_z(moment: datetime) -> str:
    """2026-12-02T03:30:48.123Z (JavaScript's toISOString, as RemyPass and Fourvenues write)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def dotnet_local(moment: datetime) -> str:
    """2026-03-19T09:00:00.0000000: .NET's round-trip format of a naive local time."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond * 10:07d}"
