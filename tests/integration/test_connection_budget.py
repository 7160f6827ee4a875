"""The connection budget on a real PostgreSQL (docs/operations.md#connection-budget): a pool
bounded per process, work that waits for a connection the server refuses for now instead of
failing, and the start-up warning when a pool does not fit in what the server has left."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tests.conftest import _drop_postgres, _fresh_postgres
from tests.helpers import accept_booking
from worker import db, db_budget, ledger
from worker.ops.migrate import upgrade
from worker.settings import Settings

pytestmark = pytest.mark.postgres

ROLE_LIMIT = 3


@pytest.fixture
def limited_url(postgres_admin_url: str) -> Iterator[str]:
    """A migrated database and a role that may hold ROLE_LIMIT connections at once: the
    server's "too many connections" on demand, without filling the shared server."""
    url, name = _fresh_postgres(postgres_admin_url)
    upgrade(url)
    role = f"tr_limited_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT {ROLE_LIMIT}"))
        conn.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"))
        conn.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    admin.dispose()
    try:
        yield make_url(url).set(username=role).render_as_string(hide_password=False)
    finally:
        _drop_postgres(postgres_admin_url, name)
        root = create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
        with root.connect() as conn:
            conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        root.dispose()


def _fill_role_slots(url: str, hold_s: float) -> threading.Thread:
    """Take every connection the role may hold (as other processes would) for hold_s."""
    libpq = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    held = [psycopg.connect(libpq) for _ in range(ROLE_LIMIT)]

    def release() -> None:
        time.sleep(hold_s)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def _issue_many(engine: Engine, keys: list[str]) -> list[BaseException | None]:
    """The ledger writes of the issue path for each key, from many threads at once."""

    def one(key: str) -> BaseException | None:
        try:
            row = ledger.get(engine, key)
            assert row is not None
            assert ledger.claim(engine, row, f"tok-{key}", lease_s=60)
            assert ledger.record_issued(engine, key, f"tok-{key}", [], f"REF-{key}") is not None
            return None
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(max_workers=24) as pool:
        return list(pool.map(one, keys))


def _bookings(url: str, n: int) -> list[str]:
    eng = db.make_engine(url, pool_size=2)
    keys = [accept_booking(eng, "eguma", f"budget-{uuid.uuid4().hex[:6]}-{i}") for i in range(n)]
    eng.dispose()
    return keys


def test_work_waits_for_a_refused_connection_instead_of_failing(limited_url: str) -> None:
    keys = _bookings(limited_url, 48)
    options = db.PoolOptions(pool_size=ROLE_LIMIT, max_overflow=0, timeout_s=30, connect_wait_s=30)
    engine = db.make_engine(limited_url, options=options)
    releaser = _fill_role_slots(limited_url, hold_s=1.5)
    started = time.monotonic()
    try:
        errors = _issue_many(engine, keys)
    finally:
        engine.dispose()
        releaser.join()
    assert [e for e in errors if e is not None] == []
    # They did wait: nothing could connect before the other connections went away.
    assert time.monotonic() - started >= 1.4
    check = db.make_engine(limited_url, pool_size=1)
    rows = ledger.get_many(check, keys)
    check.dispose()
    assert {r.status for r in rows.values()} == {"issued"}


def test_without_the_connect_wait_the_same_burst_fails(limited_url: str) -> None:
    # The control: the test above fails when refused connects are not waited for. (Threads
    # queued on the pool meanwhile are not woken by a failed connect: they time out.)
    keys = _bookings(limited_url, 24)
    options = db.PoolOptions(pool_size=ROLE_LIMIT, max_overflow=0, timeout_s=3, connect_wait_s=0)
    engine = db.make_engine(limited_url, options=options)
    releaser = _fill_role_slots(limited_url, hold_s=1.5)
    try:
        errors = _issue_many(engine, keys)
    finally:
        engine.dispose()
        releaser.join()
    refused = [e for e in errors if e is not None]
    assert any("too many connections for role" in str(e) for e in refused)
    assert all(isinstance(e, OperationalError | PoolTimeout) for e in refused)


def test_a_wrong_database_is_not_waited_for(postgres_admin_url: str) -> None:
    # Not "for now": the error must reach the caller at once, not after the connect wait.
    url = make_url(postgres_admin_url).set(database=f"tr_missing_{uuid.uuid4().hex[:8]}")
    engine = db.make_engine(
        url.render_as_string(hide_password=False), options=db.PoolOptions(connect_wait_s=30)
    )
    started = time.monotonic()
    with pytest.raises(Exception, match="does not exist"), engine.connect():
        pass
    engine.dispose()
    assert time.monotonic() - started < 5


def test_stop_waiting_ends_a_wait_at_once(limited_url: str) -> None:
    options = db.PoolOptions(pool_size=1, max_overflow=0, connect_wait_s=60)
    engine = db.make_engine(limited_url, options=options)
    releaser = _fill_role_slots(limited_url, hold_s=3)
    threading.Timer(0.5, db.stop_waiting).start()
    started = time.monotonic()
    try:
        with pytest.raises(Exception, match="too many connections"), engine.connect():
            pass
        assert time.monotonic() - started < 2.5
    finally:
        db._stopping.clear()
        engine.dispose()
        releaser.join()


def test_the_pool_is_bounded_and_named(postgres_admin_url: str) -> None:
    settings = Settings(
        database_url=postgres_admin_url,
        database_pool_size=3,
        database_max_overflow=1,
        database_pool_timeout_s=0.5,
        consumer_name="host-4242",
    )
    options = db.pool_options(settings)
    engine = db.make_engine(postgres_admin_url, options=options)
    try:
        conns = [engine.connect() for _ in range(options.most)]
        with pytest.raises(Exception, match="QueuePool limit"):
            engine.connect()
        names = {c.execute(text("SELECT current_setting('application_name')")).scalar() for c in conns}
        assert names == {"ticketrelay host-4242"}
        for c in conns:
            c.close()
    finally:
        engine.dispose()


def test_prepared_statements_are_off_behind_a_transaction_pooler(postgres_admin_url: str) -> None:
    settings = Settings(database_url=postgres_admin_url, database_transaction_pooler=True)
    engine = db.make_engine(postgres_admin_url, options=db.pool_options(settings))
    try:
        with engine.connect() as conn:
            for _ in range(10):  # psycopg prepares a statement on its 5th run by default
                conn.execute(text("SELECT 1"))
            assert conn.connection.dbapi_connection.prepare_threshold is None  # type: ignore[union-attr]
            prepared = conn.execute(text("SELECT count(*) FROM pg_prepared_statements")).scalar()
            assert prepared == 0
    finally:
        engine.dispose()


def test_start_up_check_warns_with_the_numbers_when_the_pool_does_not_fit(
    limited_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = db.make_engine(limited_url, pool_size=1)
    try:
        fits = db.PoolOptions(pool_size=2, max_overflow=1)
        assert db_budget.check(engine, fits) is None
        too_big = db.PoolOptions(pool_size=8, max_overflow=2)
        with caplog.at_level(logging.WARNING, logger="ticketrelay.db"):
            message = db_budget.check(engine, too_big)
        assert message is not None
        assert "may open 10 database connections" in message
        assert f"role limit {ROLE_LIMIT} with 1 in use" in message
        assert "TICKETRELAY_DATABASE_POOL_SIZE" in message and "PgBouncer" in message
        assert any(r.getMessage() == message and r.levelno == logging.WARNING for r in caplog.records)
    finally:
        engine.dispose()


def test_start_up_check_counts_the_servers_connections(postgres_admin_url: str) -> None:
    engine = db.make_engine(postgres_admin_url, pool_size=1)
    try:
        budget = db_budget.read_budget(engine)
        with engine.connect() as conn:
            max_connections = int(conn.execute(text("SHOW max_connections")).scalar_one())
        assert budget.max_connections == max_connections
        assert budget.in_use >= 1 and budget.role_limit is None
        # A pool as large as the whole server never fits.
        assert db_budget.problem(budget, db.PoolOptions(pool_size=max_connections)) is not None
        assert db_budget.problem(budget, db.PoolOptions(pool_size=1, max_overflow=0)) is None
    finally:
        engine.dispose()


def test_nothing_is_checked_on_sqlite_or_behind_a_pooler(sqlite_url: str, postgres_admin_url: str) -> None:
    huge = db.PoolOptions(pool_size=10_000)
    lite = db.make_engine(sqlite_url)
    assert db_budget.check(lite, huge) is None
    pg = db.make_engine(postgres_admin_url, pool_size=1)
    try:
        assert db_budget.check(pg, db.PoolOptions(pool_size=10_000, prepared_statements=False)) is None
        assert db_budget.check(pg, huge) is not None
    finally:
        pg.dispose()
        lite.dispose()
