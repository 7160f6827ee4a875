"""Telling an outage from a poison entry, and naming an error without its message.

An outage (Redis or the database unreachable, a timeout, a lock, a full Redis) goes away by
itself: the entry must be tried again. Any other database or Redis refusal is about the data
and will refuse the same entry forever (PostgreSQL's "text cannot contain NUL", an integrity
violation, an encoding error): retrying it would stop everything behind it, so the entry is
dead-lettered instead.
"""

from __future__ import annotations

import redis
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy import exc as sa

# PostgreSQL SQLSTATE classes of a database that is not there or not ready: connection
# exceptions, transaction rollback (serialization failure, deadlock), insufficient resources,
# operator intervention (shutdown, statement timeout), system errors.
_OUTAGE_CLASSES = {"08", "40", "53", "57", "58"}
# A database that is not set up (migrations not applied, privileges missing): every entry
# would fail, so waiting is right; dead-lettering them all would lose bookings.
_NOT_READY = {"42P01", "42703", "42883", "42501", "3F000", "3D000"}
# Redis answers that say "not now" rather than "not this".
_REDIS_BUSY = (
    "OOM",
    "MISCONF",
    "READONLY",
    "LOADING",
    "BUSY",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MASTERDOWN",
    "NOGROUP",
)


def sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code if isinstance(code, str) else None


def _from_sqlite(exc: sa.DBAPIError) -> bool:
    return type(exc.orig).__module__.startswith("sqlite3")


def is_transient(exc: BaseException) -> bool:
    """True when the same step may well succeed later; False when it is this data's fault."""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | BrokerError):
        return True
    if isinstance(exc, redis.ResponseError):
        return str(exc).startswith(_REDIS_BUSY)
    if isinstance(exc, sa.DisconnectionError | sa.TimeoutError):
        return True
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated:
            return True
        code = sqlstate(exc)
        if code is not None:
            return code[:2] in _OUTAGE_CLASSES or code in _NOT_READY
        if isinstance(exc, sa.OperationalError):
            # No SQLSTATE: a connection that could not be made or was lost (psycopg), or
            # SQLite's "database is locked" / "disk I/O error" / "unable to open".
            return True
        # sqlite3's InterfaceError is a parameter it cannot bind: the data's fault.
        return isinstance(exc, sa.InterfaceError) and not _from_sqlite(exc)
    if isinstance(exc, sa.SQLAlchemyError):
        # A StatementError around a bind-processing failure (a value the JSON encoder or the
        # driver refuses) and the like: about the data.
        return False
    # Socket errors outside the drivers' own wrapping.
    return isinstance(exc, OSError)


def error_label(exc: BaseException) -> str:
    """The error's type (and SQLSTATE), never its message: a driver's message quotes the
    statement's parameters or the refused data, which may be personal data."""
    code = sqlstate(exc)
    name = type(exc).__name__
    orig = getattr(exc, "orig", None)
    if orig is not None and type(orig).__name__ != name:
        name = f"{name}/{type(orig).__name__}"
    return f"{name} (sqlstate {code})" if code else name


def where(exc: BaseException) -> str:
    """file:line where the error was raised, for a log line that cannot carry its message."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
