"""Process-wide singletons for worker processes: built once, on first use."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import redis

from schemas.table import TicketIssuance
from worker import redis_clients
from worker.breaker import Breaker, Policy
from worker.db import get_engine
from worker.issuing import ClientCache, Deps, MapFn, Step, in_turn
from worker.ratelimit import RateLimiter
from worker.settings import Settings, get_accounts, get_settings


@lru_cache(maxsize=1)
def deps() -> Deps:
    settings = get_settings()
    # Timeouts and, for rediss://, the TLS options of every worker client.
    client = redis_clients.client("worker", settings)
    return Deps(
        engine=get_engine(),
        redis=client,
        settings=settings,
        accounts=get_accounts(settings),
        clients=ClientCache(),
        limiter=RateLimiter(client),
        breaker=_breaker(client, settings),
    )


def _breaker(client: redis.Redis, s: Settings) -> Breaker | None:
    if not s.breaker_enabled:
        return None
    policy = Policy(
        failure_threshold=s.breaker_failure_threshold,
        open_s=s.breaker_open_s,
        max_open_s=s.breaker_max_open_s,
    )
    return Breaker(client, policy=policy)


@lru_cache(maxsize=2)
def _executor(bulk: bool) -> ThreadPoolExecutor:
    # Two pools of the same size: a live key must never wait in a queue behind a night's bulk
    # keys, and bulk threads also sleep until their reserved rate-limit slot (worker.ratelimit).
    size = get_settings().worker_concurrency
    return ThreadPoolExecutor(max_workers=size, thread_name_prefix="bulk" if bulk else "issue")


def batch_runner(bulk: bool = False) -> MapFn:
    """How a batch task runs its keys. With the thread pool, on a process-wide pool of
    threads (one for live keys, one for bulk keys), so a batch of 16 at 250 ms provider latency
    takes 250 ms, not 4 s, and the calls in flight stay bounded per process. Otherwise
    (prefork, solo) in turn."""
    if get_settings().worker_pool != "threads":
        return in_turn

    def run(fn: Callable[[TicketIssuance], Step], rows: list[TicketIssuance]) -> list[Step]:
        if len(rows) <= 1:
            return [fn(row) for row in rows]
        return list(_executor(bulk).map(fn, rows))

    return run
