"""`ticketrelay status`: depths of the streams and queues, counts by status, oldest pending.

Redis depths come from worker.queues (as the metrics exporter reads them), SQL counts from
worker.ledger. A Redis that does not answer is reported in the output (and makes the command
exit non-zero); the database is the record, so a database error propagates."""

from __future__ import annotations

from typing import Any

from schemas.statuses import FINAL_STATUSES
from worker import ledger, redis_clients
from worker.db import engine_for
from worker.ops.reissue import running_runs
from worker.queues import read_depths
from worker.settings import Settings


def redis_part(settings: Settings) -> dict[str, Any]:
    client = redis_clients.client("ops", settings)
    try:
        d = read_depths(client, settings)
    except redis_clients.UNREACHABLE as exc:
        return {"error": f"unreachable: {type(exc).__name__}"}
    finally:
        client.close()
    return {
        "intake_stream": d.intake_length,
        "intake_pending": d.intake_pending,
        "intake_lag": d.intake_lag,
        "celery_queue": d.queues.get(settings.queue, 0),
        "bulk_queue": d.queues.get(settings.bulk_queue, 0),
        "unacked": d.unacked,
        "results_stream": d.results_length,
        "dead_letters": d.dead_length,
    }


def collect(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"redis": redis_part(settings)}
    engine = engine_for(settings.database_url)
    groups = ledger.booking_groups(engine)
    by_status: dict[str, int] = {}
    by_provider: dict[str, dict[str, int]] = {}
    for g in groups:
        by_status[g.status] = by_status.get(g.status, 0) + g.count
        statuses = by_provider.setdefault(g.provider, {})
        statuses[g.status] = statuses.get(g.status, 0) + g.count
    oldest = ledger.oldest_unfinished(groups)
    out["bookings"] = {"by_status": by_status, "by_provider": by_provider}
    out["reissue_runs"] = [
        {**run, "done": sum(n for st, n in run["by_status"].items() if st in FINAL_STATUSES)}
        for run in running_runs(engine)
    ]
    out["oldest_unfinished_age_s"] = (
        round((ledger.utcnow() - oldest).total_seconds(), 1) if oldest is not None else None
    )
    return out


def redis_unreachable(data: dict[str, Any]) -> bool:
    return "error" in data["redis"]


def render(data: dict[str, Any]) -> str:
    lines = ["redis:"]
    for k, v in data["redis"].items():
        lines.append(f"  {k:<16} {'-' if v is None else v}")
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
