"""prescription_changes: what a coach changed in a patient's program, who and when

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'prescription_changes',
        sa.Column('id', _ID, nullable=False),
        sa.Column('user_id', _ID, nullable=False),
        sa.Column('by_id', _ID, nullable=True),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('exercise', sa.String(length=24), nullable=True),
        sa.Column('level', sa.Integer(), nullable=True),
        sa.Column('text', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'],
                                name=op.f('fk_prescription_changes_user_id_users'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['by_id'], ['users.id'],
                                name=op.f('fk_prescription_changes_by_id_users'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_prescription_changes')),
    )
    op.create_index(op.f('ix_prescription_changes_user_id'), 'prescription_changes',
                    ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_prescription_changes_user_id'), table_name='prescription_changes')
    op.drop_table('prescription_changes')
