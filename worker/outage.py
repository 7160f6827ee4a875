"""What the issue path does to a row during a provider outage (docs/outages.md): park it without
spending an attempt, keep a failed probe's attempt off the booking's budget, and give up by
time as well as by attempts.

The two writes (park, uncharge_attempt) live in worker/ledger.py, the only module that writes
ticket_issuances; they are re-exported here under their old names.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from prometheus_client.registry import Collector

from schemas.result import ResultError
from schemas.table import TicketIssuance
from worker import ledger
from worker.ledger import as_utc, park, uncharge_attempt

__all__ = [
    "CIRCUIT_OPEN",
    "GIVE_UP_AFTER_S",
    "circuit_open_error",
    "give_up_after",
    "give_up_reason",
    "park",
    "uncharge_attempt",
]

# What a parked row shows as its error while it has no real one yet (a booking that arrived
# during the outage): operators see why it waits. A real last error is never overwritten.
CIRCUIT_OPEN = "circuit_open"

# The default time limit: a booking still unfinished this long after it was accepted is given
# up (ends `failed`, or `needs_review` when a call may have created tickets), whatever its
# attempts. Far above an ordinary outage (minutes to hours), below "nobody wants it any more".
GIVE_UP_AFTER_S = 24 * 3600.0


def circuit_open_error(provider: str, account: str, wait_s: float) -> ResultError:
    return ResultError(
        type=CIRCUIT_OPEN,
        message=(
            f"{provider} account {account} is failing; waiting {wait_s:.0f} s before the next "
            "try (no attempt spent)"
        ),
        retryable=True,
    )


def give_up_reason(
    row: TicketIssuance,
    max_attempts: int,
    give_up_after_s: float | None,
    now: datetime | None = None,
    started_at: datetime | None = None,
) -> str | None:
    """Why this booking must stop now, or None: its attempt budget is spent, or it has been
    unfinished for longer than the account's `give_up_after_s` (None: no time limit), counted
    from `started_at` (default: when it was accepted; a re-drive passes its own start)."""
    start = as_utc(started_at) or as_utc(row.created_at)
    return give_up_after(row.attempts - row.attempts_base, max_attempts, give_up_after_s, start, now)


def give_up_after(
    charged: int,
    max_attempts: int,
    give_up_after_s: float | None,
    start: datetime | None,
    now: datetime | None = None,
) -> str | None:
    """give_up_reason on figures: `charged` attempts spent of `max_attempts`, unfinished since
    `start`."""
    if charged >= max_attempts:
        return f"gave up after {charged} of {max_attempts} attempts"
    if give_up_after_s is None or start is None:
        return None
    current = now or ledger.utcnow()
    if (current - start).total_seconds() >= give_up_after_s:
        return (
            f"gave up after {_span(give_up_after_s)} unfinished ({charged} of {max_attempts} attempts used)"
        )
    return None


def outage_collectors(client: Any, metrics_key: str, accounts: Iterable[tuple[str, str]]) -> list[Collector]:
    """What the metrics exporter registers for outages: the breaker's state and transitions
    per account, and the sweeper's last success (deploy/prometheus/alerts.yaml)."""
    from worker.breaker import Breaker, BreakerCollector
    from worker.sweep_health import SweepCollector

    return [BreakerCollector(Breaker(client), accounts), SweepCollector(client, metrics_key)]


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"
