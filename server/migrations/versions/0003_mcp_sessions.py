"""mcp sessions

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# BIGINT on PostgreSQL; SQLite autoincrements only INTEGER PRIMARY KEY.
ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mcp_sessions",
        sa.Column("pk", ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("protocol_version", sa.String(length=32), nullable=False),
        sa.Column("client_name", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mcp_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_mcp_sessions")),
        sa.UniqueConstraint("id", name=op.f("uq_mcp_sessions_id")),
    )
    with op.batch_alter_table("mcp_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_mcp_sessions_last_used_at", ["last_used_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("mcp_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_mcp_sessions_last_used_at")
    op.drop_table("mcp_sessions")
