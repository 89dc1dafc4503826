"""oidc login: users' identity-provider columns, login states

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("idp_roles", sa.JSON(), server_default=sa.text("'[]'"), nullable=False))
        batch.add_column(sa.Column("email", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("issuer", sa.String(length=512), nullable=True))
        batch.add_column(sa.Column("subject", sa.String(length=255), nullable=True))
        batch.create_unique_constraint(batch.f("uq_users_email"), ["email"])
        # NULLs are distinct in a unique constraint: any number of guests have neither.
        batch.create_unique_constraint(batch.f("uq_users_issuer_subject"), ["issuer", "subject"])
    op.create_table(
        "oidc_login_states",
        sa.Column("state", sa.String(length=64), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("redirect_url", sa.String(length=2048), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("state", name=op.f("pk_oidc_login_states")),
    )
    op.create_index(op.f("ix_oidc_login_states_expires_at"), "oidc_login_states", ["expires_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_oidc_login_states_expires_at"), table_name="oidc_login_states")
    op.drop_table("oidc_login_states")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(batch.f("uq_users_issuer_subject"), type_="unique")
        batch.drop_constraint(batch.f("uq_users_email"), type_="unique")
        batch.drop_column("subject")
        batch.drop_column("issuer")
        batch.drop_column("email")
        batch.drop_column("idp_roles")
