"""messages: between a patient and their coach, with the patient's unread ones

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-03 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'messages',
        sa.Column('id', _ID, nullable=False),
        sa.Column('patient_id', _ID, nullable=False),
        sa.Column('coach_id', _ID, nullable=True),
        sa.Column('sender', sa.String(length=16), nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.Column('reply_to', _ID, nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('read_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['patient_id'], ['users.id'],
                                name=op.f('fk_messages_patient_id_users'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['coach_id'], ['users.id'],
                                name=op.f('fk_messages_coach_id_users'), ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    )
    op.create_index(op.f('ix_messages_patient_id'), 'messages', ['patient_id'], unique=False)
    op.create_index(op.f('ix_messages_coach_id'), 'messages', ['coach_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_messages_coach_id'), table_name='messages')
    op.drop_index(op.f('ix_messages_patient_id'), table_name='messages')
    op.drop_table('messages')
