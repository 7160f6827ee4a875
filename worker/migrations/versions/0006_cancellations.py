"""cancellations: operation, cancels, cancel_key

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 04:30:00

`operation` (`issue` | `cancel`) and `cancels` (the cancelled booking's message_id) of a row;
`cancel_key` on a booking: the one cancel allowed to call the provider's void (a booking
voided by a cancel gets its result's `revision`, from 0005, raised). Existing rows are issues.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel  # autogenerate refers to sqlmodel's column types


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ticket_issuances', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('operation', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False, server_default='issue')
        )
        batch_op.add_column(sa.Column('cancels', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True))
        batch_op.add_column(sa.Column('cancel_key', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True))
        # A cancel finds the cancels of its booking (the first one settles the rest).
        batch_op.create_index(
            'ix_ticket_issuances_cancels', ['provider', 'account', 'cancels'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('ticket_issuances', schema=None) as batch_op:
        batch_op.drop_index('ix_ticket_issuances_cancels')
        batch_op.drop_column('cancel_key')
        batch_op.drop_column('cancels')
        batch_op.drop_column('operation')
