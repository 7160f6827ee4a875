"""first_attempt_at and stored qr_codes

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 04:05:00

`first_attempt_at`: when the first provider call of a key was made (e-guma keys expire 72 h
after first use). `qr_codes`: the random Fourvenues ticket codes stored before the first call.
Both are NULL for existing rows: a row already in flight keeps its derived codes, and its age
is taken from created_at.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel  # autogenerate refers to sqlmodel's column types


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ticket_issuances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('qr_codes', sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ticket_issuances', schema=None) as batch_op:
        batch_op.drop_column('qr_codes')
        batch_op.drop_column('first_attempt_at')
