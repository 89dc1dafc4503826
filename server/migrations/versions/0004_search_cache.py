"""search cache

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "search_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("engine", sa.String(length=32), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_search_cache")),
    )
    with op.batch_alter_table("search_cache", schema=None) as batch_op:
        batch_op.create_index("ix_search_cache_fetched_at", ["fetched_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("search_cache", schema=None) as batch_op:
        batch_op.drop_index("ix_search_cache_fetched_at")
    op.drop_table("search_cache")
