"""What the `ticketrelay` command says when it cannot do its job: one line naming the problem
(with any password in a URL hidden) and a documented exit code, instead of a traceback.

Exit codes (also in `ticketrelay --help` and docs/cli.md):
    0  ok
    1  the command ran and failed (a run being fed elsewhere, a demo booking not issued, ...)
    2  usage or configuration: a bad argument, a missing file, an accounts file that does not
       load, invalid settings, a database that is not migrated
    3  a store is unreachable: Redis or the database does not answer
    4  stopped before the end (SIGINT/SIGTERM); what was started can be resumed
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import redis
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from worker.settings import AccountsError, Settings

OK = 0
FAILED = 1
USAGE = 2
UNREACHABLE = 3
STOPPED = 4

EPILOG = """exit codes:
  0  ok
  1  the command ran and failed
  2  usage or configuration: bad argument, missing file, accounts file or settings invalid,
     database not migrated (run `ticketrelay migrate`)
  3  a store is unreachable: Redis or the database does not answer
  4  stopped before the end (SIGINT/SIGTERM); a reissue run can be resumed"""

# SQLite's words and PostgreSQL's SQLSTATEs for "this table or column is not there".
_SQLITE_SCHEMA = ("no such table", "no such column", "has no column named")
_PG_SCHEMA = {"42P01", "42703"}  # undefined_table, undefined_column


@dataclass(frozen=True)
class Problem:
    code: int
    message: str


def redis_url_for_humans(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def database_url_for_humans(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(an invalid database URL)"


def _secrets(settings: Settings | None) -> list[str]:
    if settings is None:
        return []
    found = []
    pw = urlsplit(settings.redis_url).password
    if pw:
        found.append(pw)
    try:
        db_pw = make_url(settings.database_url).password
    except ArgumentError:
        db_pw = None
    if db_pw:
        found.append(str(db_pw))
    return found


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def describe(exc: BaseException, settings: Settings | None) -> Problem | None:
    """The line and exit code for an error a person can act on; None for anything else (a bug:
    its traceback is the useful answer)."""
    problem = _describe(exc, settings)
    if problem is None:
        return None
    message = problem.message
    for secret in _secrets(settings):
        message = message.replace(secret, "***")
    return Problem(problem.code, message)


def _describe(exc: BaseException, settings: Settings | None) -> Problem | None:
    redis_at = f" at {redis_url_for_humans(settings.redis_url)}" if settings else ""
    db = f" {database_url_for_humans(settings.database_url)}" if settings else ""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return Problem(
            UNREACHABLE, f"Redis unreachable{redis_at}: {_first_line(str(exc)) or type(exc).__name__}"
        )
    if isinstance(exc, redis.ResponseError):  # Redis answered, and refused the command
        return Problem(FAILED, f"Redis refused the command: {_first_line(str(exc))}")
    if isinstance(exc, DBAPIError):
        orig = exc.orig
        reason = _first_line(str(orig)) or type(orig).__name__
        if getattr(orig, "sqlstate", None) in _PG_SCHEMA or any(w in reason for w in _SQLITE_SCHEMA):
            return Problem(USAGE, f"database{db} is not migrated ({reason}): run `ticketrelay migrate`")
        if exc.connection_invalidated or type(exc).__name__ in ("OperationalError", "InterfaceError"):
            return Problem(UNREACHABLE, f"database unreachable{' at' + db if db else ''}: {reason}")
        return None
    if isinstance(exc, AccountsError):
        return Problem(USAGE, str(exc))
    if isinstance(exc, ValidationError):
        errors = exc.errors()
        where = ", ".join(
            f"{'.'.join(str(p) for p in e['loc']) or exc.title}: {e['msg']}" for e in errors[:3]
        )
        return Problem(USAGE, f"invalid configuration: {where}")
    if isinstance(exc, OSError) and exc.filename is not None:
        return Problem(USAGE, f"cannot read {exc.filename}: {exc.strerror or type(exc).__name__}")
    return None
