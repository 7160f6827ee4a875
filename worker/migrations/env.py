"""Alembic environment: the URL comes from TICKETRELAY_DATABASE_URL (or the caller)."""

from alembic import context
from sqlalchemy import create_engine

from schemas.table import TicketIssuance
from worker.settings import get_settings

target_metadata = TicketIssuance.metadata
url = context.config.get_main_option("sqlalchemy.url") or get_settings().database_url

if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
