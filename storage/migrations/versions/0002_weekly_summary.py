"""weekly summary: when the next one is due, and the day the patient chose

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 05:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('summary_day', sa.Integer(), nullable=True))
    with op.batch_alter_table('program_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('next_summary_at', storage.models.UTCDateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_program_state_next_summary_at'), ['next_summary_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('program_state', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_program_state_next_summary_at'))
        batch_op.drop_column('next_summary_at')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('summary_day')
