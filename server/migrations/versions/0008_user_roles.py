"""user roles

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        # A JSON list of role names (["admin"]); existing users get none.
        batch.add_column(sa.Column("roles", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
        # A display name, e.g. for admins created by `jan-server admin create --name`.
        batch.add_column(sa.Column("name", sa.String(length=150), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("name")
        batch.drop_column("roles")
