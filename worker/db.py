"""Database engine and sessions. SQLite by default, PostgreSQL in production."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event

from worker.settings import get_settings


def make_engine(url: str, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        # Worker threads share one file: WAL lets readers and one writer work side by side,
        # busy_timeout makes a writer wait for the lock instead of failing at once.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=False,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # pre_ping: a PostgreSQL restart must not turn into errors on the next booking. Timeouts and
    # TCP keepalives: a database host that vanishes without a reset must raise, not hang.
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": 10,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, connect_args=connect_args
    )


@lru_cache(maxsize=4)
def _cached_engine(url: str, pool_size: int) -> Engine:
    return make_engine(url, pool_size)


def engine_for(url: str, pool_size: int = 4) -> Engine:
    """A shared engine for this URL (one pool per process and URL)."""
    return _cached_engine(url, pool_size)


def get_engine() -> Engine:
    settings = get_settings()
    return _cached_engine(settings.database_url, max(10, settings.worker_concurrency + 4))
