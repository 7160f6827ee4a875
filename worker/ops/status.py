"""`ticketrelay status`: depths of the streams and queue, counts by status, oldest pending."""

from __future__ import annotations

import contextlib
from typing import Any

import redis
from sqlalchemy import func, select

from schemas.statuses import ACTIVE_STATUSES, FINAL_STATUSES
from worker import ledger
from worker.db import engine_for
from worker.ops.reissue import running_runs
from worker.settings import Settings


def collect(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=5)
    try:
        pending = 0
        with contextlib.suppress(redis.ResponseError):  # no group yet
            pending = int(client.xpending(settings.intake_stream, settings.intake_group)["pending"])
        out["redis"] = {
            "intake_stream": client.xlen(settings.intake_stream),
            "intake_pending": pending,
            "celery_queue": client.llen(settings.queue),
            "results_stream": client.xlen(settings.results_stream),
            "dead_letters": client.xlen(settings.dead_stream),
        }
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        out["redis"] = {"error": f"unreachable: {type(exc).__name__}"}
    engine = engine_for(settings.database_url)
    counts = ledger.counts_by_status(engine)
    by_status: dict[str, int] = {}
    by_provider: dict[str, dict[str, int]] = {}
    for (provider, status), n in counts.items():
        by_status[status] = by_status.get(status, 0) + n
        by_provider.setdefault(provider, {})[status] = n
    with engine.connect() as conn:
        oldest = conn.execute(
            select(func.min(ledger.C.created_at)).where(ledger.C.status.in_(list(ACTIVE_STATUSES)))
        ).scalar()
    oldest = ledger.as_utc(oldest)
    out["bookings"] = {"by_status": by_status, "by_provider": by_provider}
    out["reissue_runs"] = [
        {**run, "done": sum(n for st, n in run["by_status"].items() if st in FINAL_STATUSES)}
        for run in running_runs(engine)
    ]
    out["oldest_unfinished_age_s"] = (
        round((ledger.utcnow() - oldest).total_seconds(), 1) if oldest is not None else None
    )
    return out


def render(data: dict[str, Any]) -> str:
    lines = ["redis:"]
    for k, v in data["redis"].items():
        lines.append(f"  {k:<16} {v}")
    lines.append("bookings by status:")
    for k, v in sorted(data["bookings"]["by_status"].items()):
        lines.append(f"  {k:<16} {v}")
    lines.append("bookings by provider:")
    for provider, statuses in sorted(data["bookings"]["by_provider"].items()):
        lines.append(f"  {provider:<20} " + ", ".join(f"{s}={n}" for s, n in sorted(statuses.items())))
    for run in data.get("reissue_runs", []):
        lines.append(
            f"reissue run {run['run_id']}: {run['done']}/{run['total']} done "
            + ", ".join(f"{k}={v}" for k, v in sorted(run["by_status"].items()))
        )
    age = data["oldest_unfinished_age_s"]
    lines.append(f"oldest unfinished booking: {'none' if age is None else f'{age} s'}")
    return "\n".join(lines)
