"""Process-wide singletons for worker processes: built once, on first use."""

from __future__ import annotations

from functools import lru_cache

import redis

from worker.db import get_engine
from worker.issuing import ClientCache, Deps
from worker.ratelimit import RateLimiter
from worker.settings import get_accounts, get_settings


@lru_cache(maxsize=1)
def deps() -> Deps:
    settings = get_settings()
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=15, socket_connect_timeout=5, health_check_interval=10
    )
    return Deps(
        engine=get_engine(),
        redis=client,
        settings=settings,
        accounts=get_accounts(settings),
        clients=ClientCache(),
        limiter=RateLimiter(client),
    )
