"""statistics: the last week's pain read from an index that holds every column it needs
(day, patient, pain), not from the sessions' rows

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-03 14:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPORTED = "pain_during IS NOT NULL"


def upgrade() -> None:
    op.create_index('ix_sessions_pain', 'sessions', ['day', 'user_id', 'pain_during'],
                    unique=False, sqlite_where=sa.text(REPORTED),
                    postgresql_where=sa.text(REPORTED))


def downgrade() -> None:
    op.drop_index('ix_sessions_pain', table_name='sessions')
