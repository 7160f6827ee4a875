"""Database engine and sessions. SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

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


_write_locks: WeakKeyDictionary[Engine, threading.Lock] = WeakKeyDictionary()
_write_locks_guard = threading.Lock()


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """engine.begin() for a write. On SQLite, the threads of one process take turns on a
    Python lock first: SQLite has one writer at a time, and its own busy handler makes the
    losers sleep in steps of up to 100 ms (measured: p99 at 120 bookings/s went from 13 ms to
    over 200 ms with 64 threads). PostgreSQL locks rows, not the file: no lock there."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    with _write_locks_guard:
        lock = _write_locks.setdefault(engine, threading.Lock())
    with lock, engine.begin() as conn:
        yield conn


# --- group commit ------------------------------------------------------------------------
# The issue path writes twice per booking (the claim, the record), each a transaction of its
# own. With a hundred threads in flight, those commits were the worker's bottleneck: on SQLite
# the threads queued on the writer lock above (profiled: 83 % of the worker's busy samples
# waited there), on PostgreSQL each commit is a round trip and a WAL flush, and each thread
# held a connection of its own. A group commit runs the writes that queued up while the last
# transaction ran in one transaction, on one connection: a thread that finds its write already
# done by the current leader just returns its result.

T = TypeVar("T")
# Writes per transaction at most: a long transaction holds its row locks (PostgreSQL) and the
# file lock (SQLite) longer; the rest wait for the next one.
GROUP_MAX = 64


class _Write:
    __slots__ = ("done", "error", "fn", "value")

    def __init__(self, fn: Callable[[Connection], Any]) -> None:
        self.fn = fn
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


class GroupCommit:
    """Writes of many threads of one process, committed together.

    Each write is a function of a Connection, run inside a transaction it shares with others;
    it must only touch the database (it may run twice: see `_execute`). Its result or its
    exception reaches its own caller only."""

    def __init__(self, engine: Engine, lock: threading.Lock) -> None:
        self.engine = engine
        self._lock = lock  # on SQLite the writer lock that `writing` takes too
        self._queue: list[_Write] = []
        self._queue_lock = threading.Lock()

    def run(self, fn: Callable[[Connection], T]) -> T:
        write = _Write(fn)
        with self._queue_lock:
            self._queue.append(write)
        while not write.done:
            with self._lock:
                if write.done:  # the last leader ran it
                    break
                with self._queue_lock:
                    batch, self._queue = self._queue[:GROUP_MAX], self._queue[GROUP_MAX:]
                self._execute(batch)
        if write.error is not None:
            raise write.error
        return write.value

    def _execute(self, batch: list[_Write]) -> None:
        try:
            try:
                with self.engine.begin() as conn:
                    values = [w.fn(conn) for w in batch]
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                    batch[0].done = True
                else:
                    # One write failed (a value the database refuses, a lost connection): all
                    # of the transaction was rolled back, so each runs again on its own and
                    # only the failing one gets its error.
                    for w in batch:
                        self._alone(w)
            else:
                for w, value in zip(batch, values, strict=True):
                    w.value = value
                    w.done = True
        finally:
            # Only a BaseException (the thread is being torn down) leaves writes undone: their
            # callers get an error rather than waiting for ever.
            for w in batch:
                if not w.done:
                    w.error = RuntimeError("the write was abandoned by the thread that ran it")
                    w.done = True

    def _alone(self, w: _Write) -> None:
        try:
            with self.engine.begin() as conn:
                w.value = w.fn(conn)
        except Exception as exc:
            w.error = exc
        w.done = True


_groups: WeakKeyDictionary[Engine, GroupCommit] = WeakKeyDictionary()


def group_write(engine: Engine, fn: Callable[[Connection], T]) -> T:
    """Run `fn` in a transaction shared with the other threads' writes of this moment (see
    GroupCommit). For the hot, small, compare-and-set writes of the issue path."""
    group = _groups.get(engine)
    if group is None:
        with _write_locks_guard:
            group = _groups.get(engine)
            if group is None:
                lock = _write_locks.setdefault(engine, threading.Lock())
                group = _groups[engine] = GroupCommit(engine, lock)
    return group.run(fn)


def insert_new(dialect: str, table: Table, values: dict[str, Any], unique: list[str]) -> Any:
    """INSERT ... ON CONFLICT (unique) DO NOTHING RETURNING id: a row is written at most once,
    and whoever wrote it learns so from the returned id (None: it was there already)."""
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values)
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {dialect}")
    return stmt.on_conflict_do_nothing(index_elements=unique).returning(table.c.id)
