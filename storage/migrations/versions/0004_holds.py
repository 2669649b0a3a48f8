"""holds: referrals and pain pauses, and who lifted them

Revision ID: 0004
Revises: 0006
Create Date: 2026-12-02 13:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'holds',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('rule', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('level', sa.Integer(), nullable=True),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('started_on', sa.Date(), nullable=False),
        sa.Column('assessed_at', sa.DateTime(), nullable=True),
        sa.Column('requested_at', sa.DateTime(), nullable=True),
        sa.Column('lifted_at', sa.DateTime(), nullable=True),
        sa.Column('lifted_by', sa.String(length=96), nullable=True),
        sa.Column('lift_reason', sa.Text(), nullable=True),
        sa.Column('restart_level', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_holds_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_holds')),
    )
    op.create_index(op.f('ix_holds_user_id'), 'holds', ['user_id'], unique=False)
    # Patients referred or paused before holds were kept get an open hold, so R9 applies to
    # them too: a screen referral (no program) or the program's paused rule.
    op.execute(
        "INSERT INTO holds (user_id, kind, rule, reason, level, started_at, started_on) "
        "SELECT users.id, CASE WHEN program_state.paused_reason IN ('R4', 'R7') THEN 'pain' "
        "ELSE 'referral' END, coalesce(program_state.paused_reason, 'screen'), "
        "'referred before holds were recorded', program_state.level, "
        "coalesce(program_state.updated_at, users.created_at), "
        + ("date(coalesce(program_state.updated_at, users.created_at))"
           if op.get_bind().dialect.name == "sqlite"
           else "CAST(coalesce(program_state.updated_at, users.created_at) AS DATE)")
        + " FROM users LEFT JOIN program_state ON program_state.user_id = users.id "
        "WHERE users.status = 'referred'")


def downgrade() -> None:
    op.drop_index(op.f('ix_holds_user_id'), table_name='holds')
    op.drop_table('holds')
