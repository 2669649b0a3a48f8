"""erasure: an outbox message names whom it is about, so erasing them erases it

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 13:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('about_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))
        batch_op.create_index(batch_op.f('ix_outbox_about_id'), ['about_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_outbox_about_id_users'), 'users', ['about_id'], ['id'], ondelete='CASCADE')


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_outbox_about_id_users'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_outbox_about_id'))
        batch_op.drop_column('about_id')
