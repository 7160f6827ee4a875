"""Exponential backoff with full jitter, Retry-After as a floor (read once here for the
providers' answers and the webhook receivers' alike)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


def next_delay(
    attempt: int,
    base_s: float,
    cap_s: float,
    retry_after_s: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before attempt `attempt + 1`, where `attempt` calls have been made (>= 1).

    Full jitter (uniform over [0, min(cap, base * 2**(attempt-1))]) spreads a crowd of retries
    after an outage; a provider's Retry-After is never undercut, but capped at `cap_s` so an
    absurd value cannot park a booking for days."""
    uniform = rng.uniform if rng is not None else random.uniform
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    delay = uniform(0, ceiling)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, cap_s))
    return delay


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP-date); None when absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())
