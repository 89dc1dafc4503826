"""media

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# BIGINT on PostgreSQL; SQLite autoincrements only INTEGER PRIMARY KEY.
ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("pk", ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("storage", sa.String(length=16), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("mime", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_media_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_media")),
        sa.UniqueConstraint("id", name=op.f("uq_media_id")),
        sa.UniqueConstraint("user_id", "sha256", name=op.f("uq_media_user_id_sha256")),
    )
    op.create_index("ix_media_user_id_pk", "media", ["user_id", "pk"], unique=False)
    op.create_index("ix_media_storage_key", "media", ["storage_key"], unique=False)
    op.create_index("ix_media_expires_at", "media", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_media_expires_at", table_name="media")
    op.drop_index("ix_media_storage_key", table_name="media")
    op.drop_index("ix_media_user_id_pk", table_name="media")
    op.drop_table("media")
