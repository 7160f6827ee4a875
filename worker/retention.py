"""Keeping Redis streams bounded. With `maxmemory-policy noeviction` a stream that only grows
ends with a Redis that refuses every write, so each stream we write has a limit:

- the bookings stream loses the entries every consumer group has delivered and acknowledged
  (they hold customers' personal data and their booking is in SQL by then);
- the results and dead-letter streams are capped by length (the SQL table stays the record:
  a result trimmed away can be republished from its row), and by age: entries older than
  dead_max_age_days / results_max_age_days go, whatever the length;
- ticket_issuances (run_retention, from the beat task ticketrelay.retention): a final row's
  payload is dropped payload_retention_days after completed_at, and the row itself (with its
  outbox entries and attempts) row_retention_days after, in bounded batches.

docs/data-protection.md lists every place personal data lives and for how long.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from sqlalchemy import Engine

from worker import ledger
from worker.settings import Settings

log = logging.getLogger("ticketrelay.retention")
DAY_MS = 86_400_000

StreamId = tuple[int, int]


def parse_id(value: Any) -> StreamId:
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _field(info: dict[Any, Any], name: str) -> Any:
    # The reply's keys are bytes or str depending on the client's decode_responses.
    return info[name] if name in info else info.get(name.encode())


def safe_floor(client: redis.Redis, stream: str) -> StreamId | None:
    """The lowest id some consumer group may still need, or None when nothing may be trimmed
    (no stream, or no group: nobody has read it yet, so nothing is known to be processed)."""
    try:
        groups: list[dict[Any, Any]] = client.xinfo_groups(stream)
    except redis.ResponseError as exc:
        if "no such key" in str(exc).lower():
            return None
        raise
    if not groups:
        return None
    floor: StreamId | None = None
    for group in groups:
        candidates = [parse_id(_field(group, "last-delivered-id"))]
        if int(_field(group, "pending") or 0) > 0:
            # Delivered but unacknowledged entries lie below last-delivered-id: the oldest of
            # them must survive, or a crashed consumer's entries are lost before reclaim.
            summary: dict[Any, Any] = client.xpending(stream, _field(group, "name"))
            if summary.get("min") is not None:
                candidates.append(parse_id(summary["min"]))
        low = min(candidates)
        floor = low if floor is None else min(floor, low)
    return floor


def trim_processed(client: redis.Redis, stream: str) -> int:
    """Remove the entries of `stream` that every consumer group has delivered and acknowledged;
    return how many went. Entries with an id at or above the floor stay: the oldest pending
    entry of each group, and everything from each group's last delivered entry on.

    Not atomic: a group's floor only moves up while we look, so a floor read a moment ago is
    at worst too low (we trim less). A group created in between from "0" would miss what we
    trim, but a group created after the fact cannot expect acknowledged history anyway."""
    floor = safe_floor(client, stream)
    if floor is None or floor == (0, 0):
        return 0
    # Exact, not `~`: approximate trimming only drops whole macro-nodes (up to 100 entries
    # each), which would keep acknowledged personal data around for no reason; at one trim
    # every few seconds the exact cut is a handful of entries and cheap.
    return int(client.xtrim(stream, minid=f"{floor[0]}-{floor[1]}", approximate=False))


def cap_stream(client: redis.Redis, stream: str, maxlen: int) -> int:
    """Trim `stream` to about `maxlen` entries (0: unbounded); return how many went. For a
    stream whose writers do not pass the cap on their XADDs."""
    if maxlen <= 0:
        return 0
    return int(client.xtrim(stream, maxlen=maxlen, approximate=True))


def min_id_for_age(max_age_days: float, now: datetime) -> str:
    """The stream id below which entries are older than `max_age_days` at `now` (a stream id
    starts with its entry's Unix time in milliseconds)."""
    return f"{int(now.timestamp() * 1000) - int(max_age_days * DAY_MS)}-0"


def trim_by_age(client: redis.Redis, stream: str, max_age_days: float, now: datetime) -> int:
    """Remove the entries of `stream` older than `max_age_days` (0: no age limit); how many
    went. Exact (not `~`): what is past its age holds personal data or ticket codes."""
    if max_age_days <= 0:
        return 0
    return int(client.xtrim(stream, minid=min_id_for_age(max_age_days, now), approximate=False))


def result_streams(client: redis.Redis, settings: Settings) -> list[str]:
    """The default results stream and every reply_to stream (they all start with the
    reply_to prefix; a key of another type is left alone)."""
    found = {settings.results_stream}
    pattern = settings.reply_to_prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    pattern = pattern.replace("[", "\\[") + "*"
    for key in client.scan_iter(match=pattern, count=1000, _type="stream"):
        found.add(key.decode() if isinstance(key, bytes) else str(key))
    return sorted(found)


@dataclass
class RetentionReport:
    """Counts only (the task returns it, Flower shows it): no keys, no personal data."""

    payloads_dropped: int = 0
    rows_deleted: int = 0
    outbox_deleted: int = 0
    attempts_deleted: int = 0
    dead_trimmed: int = 0
    results_trimmed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(asdict(self))


def _batches(step: Any, settings: Settings) -> int:
    """Run `step` (one bounded statement; returns how many rows it touched) until a batch
    comes back short or retention_max_batches ran: one run never holds the table for long,
    and what is left waits for the next run."""
    total = 0
    for _ in range(settings.retention_max_batches):
        n = step()
        total += n
        if n < settings.retention_batch:
            break
    return total


def run_retention(
    engine: Engine, client: redis.Redis, settings: Settings, now: datetime | None = None
) -> RetentionReport:
    """One pass of every retention rule. `now` is injectable for tests."""
    now = now or ledger.utcnow()
    report = RetentionReport()
    limit = settings.retention_batch
    if settings.payload_retention_days > 0:
        before = now - timedelta(days=settings.payload_retention_days)
        report.payloads_dropped = _batches(lambda: ledger.drop_old_payloads(engine, before, limit), settings)
    if settings.row_retention_days > 0:
        before = now - timedelta(days=settings.row_retention_days)

        def delete_batch() -> int:
            gone = ledger.delete_old_rows(engine, before, limit)
            report.outbox_deleted += gone["outbox"]
            report.attempts_deleted += gone["attempts"]
            return gone["rows"]

        report.rows_deleted = _batches(delete_batch, settings)
    report.dead_trimmed = trim_by_age(client, settings.dead_stream, settings.dead_max_age_days, now)
    if settings.results_max_age_days > 0:
        for stream in result_streams(client, settings):
            report.results_trimmed += trim_by_age(client, stream, settings.results_max_age_days, now)
    log.info("retention pass", extra={"event": "retention", **report.as_dict()})
    return report
