"""file search

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 00:00:00

The vector index table (`file_search_vectors`: sqlite-vec's vec0 on SQLite, a pgvector table on PostgreSQL) is not
created here but by the chosen store at startup (server/mcp/tools/file_search/sqlite_vec.py, pgvector.py): it needs
an extension this migration's connection may not have. It is derived data, rebuilt from file_search_chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# BIGINT on PostgreSQL; SQLite autoincrements only INTEGER PRIMARY KEY.
ROW_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file_search_documents",
        sa.Column("pk", ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("document_id", sa.String(length=128), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_file_search_documents_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_file_search_documents")),
        sa.UniqueConstraint("user_id", "document_id", name=op.f("uq_file_search_documents_user_id_document_id")),
    )
    op.create_table(
        "file_search_chunks",
        sa.Column("pk", ROW_KEY, autoincrement=True, nullable=False),
        sa.Column("document_pk", ROW_KEY, nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_pk"],
            ["file_search_documents.pk"],
            name=op.f("fk_file_search_chunks_document_pk_file_search_documents"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_file_search_chunks")),
    )
    with op.batch_alter_table("file_search_chunks", schema=None) as batch_op:
        batch_op.create_index("ix_file_search_chunks_user_id_document_pk", ["user_id", "document_pk"], unique=False)


def downgrade() -> None:
    # On SQLite, dropping the vec0 table needs a connection with sqlite-vec loaded (enable_sqlite_vec() before the
    # engine connects); on PostgreSQL it is a plain table.
    op.execute("DROP TABLE IF EXISTS file_search_vectors")
    with op.batch_alter_table("file_search_chunks", schema=None) as batch_op:
        batch_op.drop_index("ix_file_search_chunks_user_id_document_pk")
    op.drop_table("file_search_chunks")
    op.drop_table("file_search_documents")
