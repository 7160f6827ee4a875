"""index on the provider reference

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 08:00:00

A lookup after an answer in doubt may find a provider order that another row of ours already
recorded (the same customer's other booking): the issue path asks the ledger whether a
reference is known to another row, by (provider, account, provider_reference).
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ticket_issuances', schema=None) as batch_op:
        batch_op.create_index(
            'ix_ticket_issuances_reference', ['provider', 'account', 'provider_reference'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('ticket_issuances', schema=None) as batch_op:
        batch_op.drop_index('ix_ticket_issuances_reference')
