"""Depths of ticketrelay's queues and streams in Redis, read one way for `ticketrelay status`
and the metrics exporter alike. kombu's Redis key layout is known here and nowhere else.

kombu's Redis transport keeps a queue's messages of priority p (steps 0, 3, 6, 9) in the list
`queue` (p = 0) or `queue\\x06\\x16<p>`, and the messages delivered but not acknowledged
(running, or held by a worker for their countdown) in the hash `unacked`, shared by every queue
of the Redis database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis

from worker.settings import Settings

PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEP = "\x06\x16"
UNACKED_KEY = "unacked"


def queue_lists(queue: str) -> list[str]:
    """The Redis lists holding the messages of a Celery queue, one per priority step."""
    return [queue if p == 0 else f"{queue}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS]


@dataclass
class Depths:
    queues: dict[str, int] = field(default_factory=dict)  # Celery queue -> messages waiting
    unacked: int = 0
    intake_length: int = 0
    intake_pending: int = 0
    intake_lag: int | None = None  # None when Redis cannot tell (after XDEL or trimming)
    results_length: int = 0
    dead_length: int = 0


def read_depths(client: redis.Redis, settings: Settings) -> Depths:
    """Everything in one pipeline. Raises redis.ConnectionError / TimeoutError when Redis does
    not answer; a stream or group that does not exist yet counts as empty."""
    s = settings
    queues = [s.queue, s.bulk_queue]
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for name in queue_lists(queue):
            pipe.llen(name)
    pipe.hlen(UNACKED_KEY)
    pipe.xlen(s.intake_stream)
    pipe.xinfo_groups(s.intake_stream)
    pipe.xlen(s.results_stream)
    pipe.xlen(s.dead_stream)
    replies = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, (redis.ConnectionError, redis.TimeoutError)):
            raise reply
    per_queue = len(PRIORITY_STEPS)
    depths = Depths()
    for i, queue in enumerate(queues):
        depths.queues[queue] = sum(_int(x) for x in replies[i * per_queue : (i + 1) * per_queue])
    unacked, intake_len, groups, results_len, dead_len = replies[len(queues) * per_queue :]
    depths.unacked = _int(unacked)
    depths.intake_length = _int(intake_len)
    depths.results_length = _int(results_len)
    depths.dead_length = _int(dead_len)
    if isinstance(groups, list):  # an error here means no stream yet: nothing pending
        for group in groups:
            if _text(group.get("name")) == s.intake_group:
                depths.intake_pending = _int(group.get("pending"))
                lag = group.get("lag")
                depths.intake_lag = int(lag) if lag is not None else None
    return depths


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, bytes, str)) else 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
