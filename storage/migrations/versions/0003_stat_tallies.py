"""statistics tallies per day and coach, and each enrolment's Kujala change

Both are filled from what exists, as the tick and the Kujala follow-up keep them afterwards.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNTALLIED_SESSION = "tallied_coach IS NULL AND status <> 'prompted'"
UNTALLIED_PROMPT = "tallied_coach IS NULL AND kind = 'prompt' AND status = 'sent'"
COACH = "coalesce((SELECT coach_id FROM users WHERE users.id = {table}.user_id), 0)"


def upgrade() -> None:
    op.create_table(
        'stat_tallies',
        sa.Column('day', sa.Date(), nullable=False),
        sa.Column('coach_id', sa.BigInteger(), nullable=False),
        sa.Column('measure', sa.String(length=16), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('day', 'coach_id', 'measure', name=op.f('pk_stat_tallies')),
    )
    with op.batch_alter_table('program_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kujala_change', sa.Integer(), nullable=True))
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tallied_coach', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_sessions_day'), ['day'], unique=False)
        batch_op.create_index('ix_sessions_untallied', ['tallied_coach', 'day'], unique=False,
                              sqlite_where=sa.text(UNTALLIED_SESSION),
                              postgresql_where=sa.text(UNTALLIED_SESSION))
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tallied_coach', sa.BigInteger(), nullable=True))
        batch_op.create_index('ix_outbox_untallied', ['tallied_coach', 'status', 'sent_at'],
                              unique=False,
                              sqlite_where=sa.text(UNTALLIED_PROMPT),
                              postgresql_where=sa.text(UNTALLIED_PROMPT))

    # Count what is there already, as the tick will count what comes.
    scored = ("FROM assessments WHERE assessments.user_id = program_state.user_id AND "
              "kind = 'kujala' AND score IS NOT NULL")
    op.execute("UPDATE program_state SET kujala_change = (SELECT last.score - first.score "
               f"FROM assessments first, assessments last WHERE first.id = (SELECT min(id) "
               f"{scored}) AND last.id = (SELECT max(id) {scored}) AND first.id <> last.id)")
    sent_day = ("date(sent_at)" if op.get_bind().dialect.name == "sqlite"
                else "CAST(sent_at AS DATE)")
    op.execute(f"UPDATE sessions SET tallied_coach = {COACH.format(table='sessions')} "
               f"WHERE {UNTALLIED_SESSION}")
    op.execute("INSERT INTO stat_tallies (day, coach_id, measure, count) SELECT day, "
               "tallied_coach, status, count(*) FROM sessions WHERE tallied_coach IS NOT NULL "
               "GROUP BY day, tallied_coach, status")
    op.execute(f"UPDATE outbox SET tallied_coach = {COACH.format(table='outbox')} "
               f"WHERE {UNTALLIED_PROMPT}")
    op.execute(f"INSERT INTO stat_tallies (day, coach_id, measure, count) SELECT {sent_day}, "
               "tallied_coach, 'prompt', count(*) FROM outbox WHERE tallied_coach IS NOT NULL "
               f"GROUP BY {sent_day}, tallied_coach")


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_untallied')
        batch_op.drop_column('tallied_coach')
    with op.batch_alter_table('program_state', schema=None) as batch_op:
        batch_op.drop_column('kujala_change')
    with op.batch_alter_table('sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_sessions_untallied')
        batch_op.drop_index(batch_op.f('ix_sessions_day'))
        batch_op.drop_column('tallied_coach')
    op.drop_table('stat_tallies')
