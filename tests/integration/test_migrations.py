"""The migrations build exactly the table the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect, text

from schemas.table import TicketIssuance
from worker.ops.migrate import alembic_config

ROOT = Path(__file__).resolve().parents[2]


def test_migrated_schema_matches_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), TicketIssuance.metadata)
    assert diff == []
    cols = {c["name"] for c in inspect(engine).get_columns("ticket_issuances")}
    contract = {
        "idempotency_key",
        "message_id",
        "provider",
        "account",
        "generation",
        "status",
        "attempts",
        "provider_reference",
        "tickets",
        "error_type",
        "error_message",
        "http_status",
        "created_at",
        "updated_at",
        "completed_at",
        "callback_sent_at",
    }
    assert contract <= cols


def test_migrate_command_creates_and_then_leaves_the_schema(tmp_path: Path) -> None:
    """`ticketrelay migrate` as an operator runs it: twice in a row, on a new SQLite file."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    env = {**os.environ, "TICKETRELAY_DATABASE_URL": url}
    for _ in range(2):
        proc = subprocess.run(
            [str(ROOT / "ticketrelay"), "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "newest schema" in proc.stdout
    engine = create_engine(url)
    assert "ticket_issuances" in inspect(engine).get_table_names()
    with engine.connect() as conn:
        head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
        assert conn.execute(text("select version_num from alembic_version")).scalar() == head
