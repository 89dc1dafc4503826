"""The media table and the queries on it.

A row is one user's media object. Its bytes live in storage under `storage_key`: content-addressed
(`images/<sha256>.<ext>`) once the upload is complete, so rows of several users with the same bytes share one
object, which is deleted only with the last row naming it. A row still waiting for its presigned upload has
status "pending", no sha256, and exists for nobody but CompleteUpload and the signed PUT route.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Select, String, UniqueConstraint, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, RowKey, UtcDateTime, utcnow

READY = "ready"
PENDING = "pending"


class Media(Base):
    __tablename__ = "media"
    __table_args__ = (
        # Per-user dedupe. Pending rows have no sha256 (NULLs never collide).
        UniqueConstraint("user_id", "sha256"),
        Index("ix_media_user_id_pk", "user_id", "pk"),
        Index("ix_media_storage_key", "storage_key"),
        Index("ix_media_expires_at", "expires_at"),
    )

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16))
    storage: Mapped[str] = mapped_column(String(16))
    storage_key: Mapped[str] = mapped_column(String(255))
    mime: Mapped[str] = mapped_column(String(64))
    # Pending rows: the size the client declared (0 = not declared).
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # When the retention sweep deletes it.
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


async def get_owned(session: AsyncSession, user_id: str, media_id: str, *, ready: bool = True) -> Media | None:
    """The user's media with this id (only completed ones unless ready=False); None otherwise."""
    statement = select(Media).where(Media.id == media_id, Media.user_id == user_id)
    if ready:
        statement = statement.where(Media.status == READY)
    return await session.scalar(statement)


async def get_by_id(session: AsyncSession, media_id: str) -> Media | None:
    """Any user's media: only for routes whose signed URL already proves the right to it."""
    return await session.scalar(select(Media).where(Media.id == media_id))


async def get_by_sha256(session: AsyncSession, user_id: str, sha256: str) -> Media | None:
    return await session.scalar(select(Media).where(Media.user_id == user_id, Media.sha256 == sha256))


async def get_owned_many(session: AsyncSession, user_id: str, media_ids: Collection[str]) -> dict[str, Media]:
    rows = await session.scalars(
        select(Media).where(Media.user_id == user_id, Media.status == READY, Media.id.in_(list(media_ids)))
    )
    return {row.id: row for row in rows}


def owned_media(user_id: str) -> Select[Any]:
    """The user's completed media, unordered (pagination orders them)."""
    return select(Media).where(Media.user_id == user_id, Media.status == READY)


async def key_in_use(session: AsyncSession, storage_key: str) -> bool:
    count = await session.scalar(select(func.count()).where(Media.storage_key == storage_key))
    return bool(count)


async def delete_row(session: AsyncSession, row: Media) -> None:
    await session.execute(delete(Media).where(Media.pk == row.pk))


async def expired(session: AsyncSession, limit: int) -> list[Media]:
    """Rows past their retention, oldest first."""
    statement = select(Media).where(Media.expires_at < utcnow()).order_by(Media.expires_at).limit(limit)
    return list((await session.scalars(statement)).all())
