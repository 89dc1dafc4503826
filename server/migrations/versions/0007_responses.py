"""responses

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# BIGINT on PostgreSQL; SQLite autoincrements only INTEGER PRIMARY KEY.
ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("pk", ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("background", sa.Boolean(), nullable=False),
        sa.Column("previous_response_id", sa.String(length=64), nullable=True),
        sa.Column("conversation_id", sa.String(length=64), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=True),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("incomplete_details", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_responses_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_responses")),
        sa.UniqueConstraint("id", name=op.f("uq_responses_id")),
    )
    with op.batch_alter_table("responses", schema=None) as batch_op:
        batch_op.create_index("ix_responses_user_id_pk", ["user_id", "pk"], unique=False)
        batch_op.create_index("ix_responses_status", ["status"], unique=False)

    op.create_table(
        "response_items",
        sa.Column("pk", ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("response_pk", ROW_KEY, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["response_pk"], ["responses.pk"], name=op.f("fk_response_items_response_pk_responses"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_response_items")),
    )
    with op.batch_alter_table("response_items", schema=None) as batch_op:
        batch_op.create_index("ix_response_items_response_pk_kind_pk", ["response_pk", "kind", "pk"], unique=False)


def downgrade() -> None:
    op.drop_table("response_items")
    op.drop_table("responses")
