"""media uploads: a chat platform's file id per bot and file, to re-send without uploading

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-02 13:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.models

revision: str = '0008'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'media_uploads',
        sa.Column('bot', sa.String(length=64), nullable=False),
        sa.Column('media_key', sa.String(length=64), nullable=False),
        sa.Column('file_id', sa.String(length=256), nullable=False),
        sa.Column('created_at', storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('bot', 'media_key', name=op.f('pk_media_uploads')),
    )


def downgrade() -> None:
    op.drop_table('media_uploads')
