"""Keeping Redis streams bounded. With `maxmemory-policy noeviction` a stream that only grows
ends with a Redis that refuses every write, so each stream we write has a limit:

- the bookings stream loses the entries every consumer group has delivered and acknowledged
  (they hold customers' personal data and their booking is in SQL by then);
- the results and dead-letter streams are capped by length (the SQL table stays the record:
  a result trimmed away can be republished from its row).
"""

from __future__ import annotations

from typing import Any

import redis

StreamId = tuple[int, int]


def _parse_id(value: Any) -> StreamId:
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
        candidates = [_parse_id(_field(group, "last-delivered-id"))]
        if int(_field(group, "pending") or 0) > 0:
            # Delivered but unacknowledged entries lie below last-delivered-id: the oldest of
            # them must survive, or a crashed consumer's entries are lost before reclaim.
            summary: dict[Any, Any] = client.xpending(stream, _field(group, "name"))
            if summary.get("min") is not None:
                candidates.append(_parse_id(summary["min"]))
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
