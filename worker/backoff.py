"""Exponential backoff with full jitter, Retry-After as a floor."""

from __future__ import annotations

import random


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
