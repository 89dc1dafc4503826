"""MCP sessions: the `mcp_sessions` table, so that any replica can serve any session.

A session is issued by `initialize` (its id goes out in the `Mcp-Session-Id` header), belongs to the user who
created it, and remembers the protocol version negotiated for it. It ends on `DELETE /v1/mcp` or after a day
unused; an ended, unknown or other user's session reads as absent, which the transport turns into 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, Index, String, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, RowKey, UtcDateTime, utcnow
from server.core.ids import new_id

# A session unused this long is over; clients that vanish without DELETE leave rows that are purged then.
SESSION_IDLE_TTL = timedelta(days=1)
# `last_used_at` is written at most this often, so a busy session does not cost a write per request.
_TOUCH_INTERVAL = timedelta(minutes=5)


class McpSessionRow(Base):
    __tablename__ = "mcp_sessions"
    __table_args__ = (Index("ix_mcp_sessions_last_used_at", "last_used_at"),)

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    # 32 random characters of [0-9a-z] (~165 bits): the id is the session's only secret besides the user's token.
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("mcps", 32))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    protocol_version: Mapped[str] = mapped_column(String(32))
    client_name: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_used_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


@dataclass(frozen=True)
class McpSession:
    id: str
    user_id: str
    protocol_version: str


class McpSessionStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, user_id: str, protocol_version: str, client_name: str | None) -> McpSession:
        now = utcnow()
        async with self._sessions.begin() as session:
            await session.execute(delete(McpSessionRow).where(McpSessionRow.last_used_at < now - SESSION_IDLE_TTL))
            row = McpSessionRow(
                user_id=user_id,
                protocol_version=protocol_version,
                client_name=client_name[:256] if client_name else None,
                created_at=now,
                last_used_at=now,
            )
            session.add(row)
            await session.flush()
            return McpSession(id=row.id, user_id=user_id, protocol_version=protocol_version)

    async def get(self, session_id: str, user_id: str) -> McpSession | None:
        """The caller's live session with this id, or None (unknown, ended, idle too long, or someone else's)."""
        now = utcnow()
        async with self._sessions.begin() as session:
            row = (
                await session.execute(
                    select(McpSessionRow).where(McpSessionRow.id == session_id, McpSessionRow.user_id == user_id)
                )
            ).scalar_one_or_none()
            if row is None or row.last_used_at < now - SESSION_IDLE_TTL:
                return None
            if row.last_used_at < now - _TOUCH_INTERVAL:
                await session.execute(update(McpSessionRow).where(McpSessionRow.pk == row.pk).values(last_used_at=now))
            return McpSession(id=row.id, user_id=row.user_id, protocol_version=row.protocol_version)

    async def end(self, session_id: str, user_id: str) -> bool:
        """Deletes the caller's session; False if there was none."""
        async with self._sessions.begin() as session:
            result = await session.execute(
                delete(McpSessionRow).where(McpSessionRow.id == session_id, McpSessionRow.user_id == user_id)
            )
            return bool(getattr(result, "rowcount", 0))
