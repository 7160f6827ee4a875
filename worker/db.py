"""Database engine and sessions. SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite

from worker.settings import Settings, get_settings

log = logging.getLogger("ticketrelay.db")


@dataclass(frozen=True)
class PoolOptions:
    """How one process uses PostgreSQL (docs/operations.md#connection-budget). The defaults
    are the settings' defaults; `pool_options(settings)` reads them."""

    pool_size: int = 8
    max_overflow: int = 2
    # Work that finds every connection of the pool busy waits this long for one, then fails.
    timeout_s: float = 30.0
    # A refused connect is tried again with backoff for this long at most (see _connect).
    connect_wait_s: float = 30.0
    # psycopg's prepare_threshold=None: no server-side prepared statements (PgBouncer in
    # transaction pooling mode hands each transaction a different server connection).
    prepared_statements: bool = True
    # Shown in pg_stat_activity.application_name: which process holds a connection.
    application_name: str = "ticketrelay"

    @property
    def most(self) -> int:
        """Connections this process may hold at once."""
        return self.pool_size + self.max_overflow


def pool_options(settings: Settings, pool_size: int | None = None) -> PoolOptions:
    return PoolOptions(
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        timeout_s=settings.database_pool_timeout_s,
        connect_wait_s=settings.database_connect_wait_s,
        prepared_statements=not settings.database_transaction_pooler,
        # host-pid: the connections of a process that was killed can be told apart.
        application_name=f"ticketrelay {settings.consumer_name}"[:63],
    )


def make_engine(url: str, pool_size: int = 10, options: PoolOptions | None = None) -> Engine:
    """An engine for `url`. On PostgreSQL its pool is bounded by `options` (default: a pool of
    `pool_size`, overflow and waits as the PoolOptions defaults); on SQLite, `pool_size`
    connections plus as many again, as before (one file, one host: no server to exhaust)."""
    if url.startswith("sqlite"):
        # Worker threads share one file: WAL lets readers and one writer work side by side,
        # busy_timeout makes a writer wait for the lock instead of failing at once.
        size = options.pool_size if options else pool_size
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=size,
            max_overflow=size,
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
    opts = options or PoolOptions(pool_size=pool_size)
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
            "application_name": opts.application_name,
        }
        if not opts.prepared_statements:
            connect_args["prepare_threshold"] = None
    engine = create_engine(
        url,
        pool_size=opts.pool_size,
        max_overflow=opts.max_overflow,
        pool_timeout=opts.timeout_s,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
    if url.startswith("postgresql") and opts.connect_wait_s > 0:

        @event.listens_for(engine, "do_connect")
        def _patient(dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
            return _connect(lambda: dialect.connect(*cargs, **cparams), opts.connect_wait_s)

    return engine


# --- waiting for a connection PostgreSQL refuses for now -----------------------------------
# A server at max_connections answers "sorry, too many clients already", a role at its limit
# "too many connections for role", one starting up or shutting down "the database system is
# starting up"; a restart leaves nothing listening for a moment (connection refused). Raised
# into the issue path, each dropped its key to the sweeper; waiting here turns them into a
# delay instead. psycopg's connect errors carry no SQLSTATE (libpq reports a failed start-up
# as text only), so the errors that are about the request itself, and would fail the same way
# for ever, are told by their text and raise at once: a wrong password or user, a database
# that does not exist, a host pg_hba.conf refuses. (A server with non-English lc_messages
# makes those wait connect_wait_s first, then raise all the same.)
_REFUSED_CLASSES = ("08", "53", "57")
_PERMANENT = (
    "password authentication failed",
    "authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "not permitted to log in",
    "permission denied",
    "invalid connection option",
    "invalid dsn",
)
CONNECT_BACKOFF_S = (0.05, 2.0)  # first wait, longest wait
_stopping = threading.Event()
_refusals = {"count": 0, "logged_at": 0.0}
_refusals_lock = threading.Lock()
REFUSAL_LOG_EVERY_S = 5.0


def stop_waiting() -> None:
    """The process is shutting down: connects stop waiting and raise their last error."""
    _stopping.set()


def _refused_for_now(exc: BaseException) -> bool:
    if type(exc).__name__ != "OperationalError":
        return False  # a ProgrammingError (bad option) and the like: about the request
    code = getattr(exc, "sqlstate", None)
    if isinstance(code, str):
        return code[:2] in _REFUSED_CLASSES
    message = str(exc).lower()
    return not any(marker in message for marker in _PERMANENT)


def _connect(connect: Callable[[], Any], wait_s: float) -> Any:
    """connect(), tried again with jittered, doubling waits while the server refuses for now,
    for `wait_s` in all at most (and not once the process is stopping)."""
    deadline = time.monotonic() + wait_s
    delay, longest = CONNECT_BACKOFF_S
    while True:
        try:
            return connect()
        except Exception as exc:
            pause = delay * random.uniform(0.5, 1.5)
            if not _refused_for_now(exc) or _stopping.is_set() or time.monotonic() + pause > deadline:
                raise
            _note_refusal(exc)
            if _stopping.wait(pause):
                raise
            delay = min(delay * 2, longest)


def _note_refusal(exc: BaseException) -> None:
    # Many threads may wait at once: one line per few seconds with their count, not one each.
    now = time.monotonic()
    with _refusals_lock:
        _refusals["count"] += 1
        if now - _refusals["logged_at"] < REFUSAL_LOG_EVERY_S:
            return
        count, _refusals["count"], _refusals["logged_at"] = _refusals["count"], 0, now
    log.warning(
        "database refused a connection; waiting for one",
        # The type and SQLSTATE only: a driver's message may quote the connection's details.
        extra={
            "event": "db_connect_refused",
            "error": f"{type(exc).__name__} (sqlstate {getattr(exc, 'sqlstate', None)})",
            "count": count,
        },
    )


@lru_cache(maxsize=4)
def _cached_engine(url: str, options: PoolOptions) -> Engine:
    return make_engine(url, options.pool_size, options)


def engine_for(url: str, pool_size: int = 4) -> Engine:
    """A shared engine for this URL (one pool per process and URL), for commands that need
    fewer connections than a worker."""
    return _cached_engine(url, pool_options(get_settings(), pool_size))


def get_engine() -> Engine:
    """This process's engine, bounded by TICKETRELAY_DATABASE_POOL_SIZE and its siblings."""
    settings = get_settings()
    return _cached_engine(settings.database_url, pool_options(settings))


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
