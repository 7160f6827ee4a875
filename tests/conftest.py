"""Shared fixtures: a real Redis (the local server when one answers, else an embedded
valkey-server), real SQLite files and, when reachable, a real PostgreSQL."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, create_engine, text

from worker.db import make_engine
from worker.devtools.embedded import redis_answers, start_server
from worker.ops.migrate import upgrade
from worker.settings import Settings

# The tests run against the built-in provider sandbox, by explicit choice as everyone must
# (intake, worker and beat refuse to start without an accounts file otherwise); set before
# any Settings is read, so the processes the tests start inherit it too.
os.environ["TICKETRELAY_SANDBOX"] = "1"

LOCAL_REDIS = os.environ.get("TICKETRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("TICKETRELAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The local Redis when it answers, else an embedded server. On the local server each test
    session takes a database of its own (a lock key in db 0), so two sessions side by side
    (a developer and CI, or parallel helpers) never flush each other's data."""
    if redis_answers(LOCAL_REDIS):
        base = LOCAL_REDIS.rsplit("/", 1)[0]
        admin = redis.Redis.from_url(f"{base}/0")
        token = uuid.uuid4().hex
        for db in (14, 15, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1):
            lock = f"ticketrelay:test-session-lock:{db}"
            if admin.set(lock, token, nx=True, ex=3 * 3600):
                try:
                    yield f"{base}/{db}"
                finally:
                    if admin.get(lock) == token.encode():
                        admin.delete(lock)
                return
        pytest.skip("every test database of the local Redis is taken by other test sessions")
    port = free_port()
    proc = start_server(port=port)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    redis.Redis.from_url(redis_server_url).flushdb()
    return redis_server_url


@pytest.fixture
def redis_client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _postgres_reachable() -> str | None:
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 2})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # any failure means "not here"
        return f"no PostgreSQL at {PG_URL} ({type(exc).__name__}); PostgreSQL cases skipped"


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    why = _postgres_reachable()
    if why:
        pytest.skip(why)
    return PG_URL


def _fresh_postgres(admin_url: str) -> tuple[str, str]:
    name = f"tr_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return admin_url.rsplit("/", 1)[0] + f"/{name}", name


def _drop_postgres(admin_url: str, name: str) -> None:
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database: SQLite always, PostgreSQL when reachable."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ticketrelay.db'}"
        upgrade(url)
        yield url
        return
    admin_url = request.getfixturevalue("postgres_admin_url")
    url, name = _fresh_postgres(admin_url)
    upgrade(url)
    try:
        yield url
    finally:
        _drop_postgres(admin_url, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ticketrelay.db'}"
    upgrade(url)
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=8)
    yield eng
    eng.dispose()


@pytest.fixture
def settings(redis_url: str, sqlite_url: str) -> Settings:
    return Settings(
        redis_url=redis_url, database_url=sqlite_url, consumer_name="test-consumer", intake_block_ms=50
    )
