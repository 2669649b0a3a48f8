"""outbox: how many parts of a message went out, and an index for a chat's pending rows

A message of several parts (a long text, a text and its chart or file) resumes at its first
unsent part; a chat's later rows wait while an earlier one is retried.

Revision ID: 0006
Revises: 0008
Create Date: 2026-12-02 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "status = 'pending'"


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parts_sent', sa.Integer(), nullable=False,
                                      server_default='0'))
        batch_op.create_index('ix_outbox_chat_pending', ['channel', 'chat_id', 'id'],
                              unique=False, sqlite_where=sa.text(PENDING),
                              postgresql_where=sa.text(PENDING))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_chat_pending')
        batch_op.drop_column('parts_sent')
