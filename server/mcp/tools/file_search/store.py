"""The file-search tables: indexed documents and their chunks, each row owned by one user.

A chunk keeps its embedding as raw float32 bytes: the exact store searches those directly, and the sqlite-vec and
pgvector indexes (server/mcp/tools/file_search/sqlite_vec.py, pgvector.py) are derived from them, so an index can
be rebuilt, or the backend switched, without re-embedding anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

import server.auth.store  # noqa: F401  (registers `users`, which user_id references)
from server.core.db import Base, RowKey, UtcDateTime, utcnow


class FileSearchDocument(Base):
    __tablename__ = "file_search_documents"
    __table_args__ = (UniqueConstraint("user_id", "document_id"),)

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The caller's own name for the document, unique per user (another user may use the same one).
    document_id: Mapped[str] = mapped_column(String(128))
    # "metadata" is reserved by SQLAlchemy's declarative base, hence the attribute name.
    document_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    tags: Mapped[list[str]] = mapped_column(JSON)
    token_count: Mapped[int] = mapped_column(Integer)
    chunk_count: Mapped[int] = mapped_column(Integer)
    indexed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class FileSearchChunk(Base):
    __tablename__ = "file_search_chunks"
    __table_args__ = (Index("ix_file_search_chunks_user_id_document_pk", "user_id", "document_pk"),)

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    document_pk: Mapped[int] = mapped_column(ForeignKey("file_search_documents.pk", ondelete="CASCADE"))
    # Copied from the document so a search filters chunks by owner without a join.
    user_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    # float32 little-endian, L2-normalized (the embedder's output row as bytes).
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
