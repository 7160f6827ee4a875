"""The migrations build exactly the table the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from schemas.table import TicketIssuance


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
