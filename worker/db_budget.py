"""The start-up check of the connection budget (docs/operations.md#connection-budget): does
this process's pool still fit in what the PostgreSQL server has left?

Every worker, intake and exporter process keeps its own pool; their sum must stay under the
server's max_connections less the slots reserved for superusers. A fleet that outgrows it gets
"too many clients" at the worst moment, in a burst after restarts, so the process says so when
it starts instead, with the numbers and the fix."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy import Engine, text

from worker.db import PoolOptions

log = logging.getLogger("ticketrelay.db")


@dataclass(frozen=True)
class Budget:
    max_connections: int
    reserved: int  # superuser_reserved_connections (+ reserved_connections from PostgreSQL 16)
    in_use: int  # client backends now, this check's own included
    role_limit: int | None  # the role's CONNECTION LIMIT, None: none
    role_in_use: int

    def left(self) -> int:
        """Connections still free for this process, counting the one the check holds (it
        goes back into this process's pool)."""
        free = self.max_connections - self.reserved - self.in_use + 1
        if self.role_limit is not None:
            free = min(free, self.role_limit - self.role_in_use + 1)
        return free


def read_budget(engine: Engine) -> Budget:
    with engine.connect() as conn:
        max_connections = int(conn.execute(text("SHOW max_connections")).scalar_one())
        reserved = int(conn.execute(text("SHOW superuser_reserved_connections")).scalar_one())
        if conn.dialect.server_version_info and conn.dialect.server_version_info >= (16,):
            reserved += int(conn.execute(text("SHOW reserved_connections")).scalar_one())
        in_use = int(
            conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
            ).scalar_one()
        )
        limit, role_in_use = conn.execute(
            text(
                "SELECT r.rolconnlimit, (SELECT count(*) FROM pg_stat_activity a"
                " WHERE a.usename = r.rolname AND a.backend_type = 'client backend')"
                " FROM pg_roles r WHERE r.rolname = current_user"
            )
        ).one()
    return Budget(max_connections, reserved, in_use, None if limit < 0 else int(limit), int(role_in_use))


def problem(budget: Budget, options: PoolOptions) -> str | None:
    """The warning for a pool that does not fit (never a host name or password), or None."""
    left = budget.left()
    if options.most <= left:
        return None
    role = (
        f", role limit {budget.role_limit} with {budget.role_in_use} in use"
        if budget.role_limit is not None
        else ""
    )
    return (
        f"this process may open {options.most} database connections (pool {options.pool_size}"
        f" + overflow {options.max_overflow}) but the server has {max(left, 0)} left"
        f" (max_connections {budget.max_connections} - reserved {budget.reserved}"
        f" - in use {budget.in_use}{role}): work will wait for connections."
        " Lower TICKETRELAY_DATABASE_POOL_SIZE, raise max_connections, or put PgBouncer"
        " (transaction pooling) in front: docs/operations.md#connection-budget"
    )


def check(engine: Engine, options: PoolOptions) -> str | None:
    """Log a WARNING when this process's pool does not fit; returns the warning. On SQLite,
    or behind a transaction pooler (its own pool is the budget), there is nothing to check."""
    if engine.dialect.name != "postgresql" or not options.prepared_statements:
        return None
    try:
        message = problem(read_budget(engine), options)
    except Exception as exc:  # the check must never stop a process from starting
        log.info(
            "connection budget not checked",
            extra={"event": "db_budget_unchecked", "error": type(exc).__name__},
        )
        return None
    if message is not None:
        log.warning(message, extra={"event": "db_budget_exceeded", "pool_most": options.most})
    return message


def check_in_background(engine: Engine, options: PoolOptions) -> threading.Thread:
    """check() without delaying the start: a database that is not up yet makes the check wait
    for its connection (worker.db's connect wait), never the process."""
    thread = threading.Thread(target=check, args=(engine, options), daemon=True, name="db-budget-check")
    thread.start()
    return thread
