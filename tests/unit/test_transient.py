"""Which errors leave an entry pending (an outage) and which dead-letter it (its data)."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
import redis
from kombu.exceptions import OperationalError as BrokerError
from psycopg import errors as pg
from sqlalchemy import exc as sa

from worker.transient import error_label, is_transient


def wrapped(cls: type[sa.DBAPIError], orig: Exception, invalidated: bool = False) -> sa.DBAPIError:
    return cls("INSERT ...", {"payload": "jane@example.com"}, orig, connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "error",
    [
        redis.ConnectionError("refused"),
        redis.TimeoutError("timed out"),
        redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
        redis.ResponseError("READONLY You can't write against a read only replica."),
        BrokerError("Error 111 connecting"),
        ConnectionRefusedError(),
        sa.TimeoutError("QueuePool limit reached"),
        wrapped(sa.OperationalError, psycopg.OperationalError("server closed the connection unexpectedly")),
        wrapped(sa.OperationalError, sqlite3.OperationalError("database is locked")),
        wrapped(sa.OperationalError, pg.AdminShutdown()),
        wrapped(sa.OperationalError, pg.QueryCanceled()),
        wrapped(sa.OperationalError, pg.SerializationFailure()),
        wrapped(sa.OperationalError, pg.DeadlockDetected()),
        wrapped(sa.InterfaceError, psycopg.InterfaceError("connection is closed")),
        wrapped(sa.ProgrammingError, pg.UndefinedTable()),  # migrations not applied: wait
        wrapped(sa.DataError, psycopg.DataError("x"), invalidated=True),
    ],
    ids=lambda e: f"{type(e).__name__}-{type(getattr(e, 'orig', e)).__name__}",
)
def test_outages_are_waited_out(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        wrapped(sa.DataError, psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")),
        wrapped(sa.DataError, pg.UntranslatableCharacter()),
        wrapped(sa.DataError, pg.StringDataRightTruncation()),
        wrapped(sa.DataError, pg.InvalidTextRepresentation()),
        wrapped(sa.IntegrityError, pg.NotNullViolation()),
        wrapped(sa.IntegrityError, sqlite3.IntegrityError("NOT NULL constraint failed")),
        wrapped(sa.InterfaceError, sqlite3.InterfaceError("Error binding parameter 1")),
        wrapped(sa.ProgrammingError, sqlite3.ProgrammingError("Error binding parameter 1")),
        wrapped(sa.OperationalError, pg.ProgramLimitExceeded()),  # e.g. an index row too large
        sa.StatementError("(builtins.TypeError) not JSON serializable", "INSERT", {}, TypeError("x")),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ValueError("a bug"),
    ],
    ids=lambda e: f"{type(e).__name__}-{type(getattr(e, 'orig', e)).__name__}",
)
def test_refusals_of_the_data_are_not_outages(error: BaseException) -> None:
    assert not is_transient(error)


def test_the_label_names_the_type_and_sqlstate_never_the_message() -> None:
    error = wrapped(sa.DataError, pg.UntranslatableCharacter("\\u0000 in jane@example.com"))
    label = error_label(error)
    assert label == "DataError/UntranslatableCharacter (sqlstate 22P05)"
    assert "jane" not in label and "INSERT" not in label
