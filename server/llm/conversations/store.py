"""The conversations and conversation_items tables and the queries on them.

Every query is scoped to the owning user: a conversation (and so its items) of another user does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, RowKey, UtcDateTime, utcnow
from server.core.ids import new_id


class Conversation(Base):
    __tablename__ = "conversations"
    __table_args__ = (
        Index("ix_conversations_user_id_pk", "user_id", "pk"),
        Index("ix_conversations_user_id_project_id_pk", "user_id", "project_id", "pk"),
        Index("ix_conversations_user_id_referrer_pk", "user_id", "referrer", "pk"),
    )

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("conv"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Deleting a project detaches its conversations; they keep existing.
    project_id: Mapped[str | None] = mapped_column(ForeignKey("projects.id", ondelete="SET NULL"))
    title: Mapped[str | None] = mapped_column(String(256))
    referrer: Mapped[str | None] = mapped_column(String(64))
    # `metadata` is reserved on declarative classes, hence the attribute name.
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class ConversationItem(Base):
    """One item in OpenAI's input/output item shape: a message (role + content parts), a function call
    (call_id, name, arguments) or a function call's output (call_id, output)."""

    __tablename__ = "conversation_items"
    __table_args__ = (Index("ix_conversation_items_conversation_pk_pk", "conversation_pk", "pk"),)

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("msg"))
    conversation_pk: Mapped[int] = mapped_column(ForeignKey("conversations.pk", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="completed")
    role: Mapped[str | None] = mapped_column(String(16))
    # Message content parts, normalized to OpenAI's form: [{"type": "input_text", "text": "..."}, ...].
    content: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    call_id: Mapped[str | None] = mapped_column(String(128))
    name: Mapped[str | None] = mapped_column(String(128))
    arguments: Mapped[str | None] = mapped_column(Text)
    output: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


async def get_owned_conversation(session: AsyncSession, user_id: str, conversation_id: str) -> Conversation | None:
    """The conversation with this public id if `user_id` owns it; None otherwise (callers answer 404)."""
    return await session.scalar(
        select(Conversation).where(Conversation.id == conversation_id, Conversation.user_id == user_id)
    )


async def all_items(session: AsyncSession, conversation: Conversation) -> list[ConversationItem]:
    """Every item of a conversation, oldest first."""
    statement = (
        select(ConversationItem)
        .where(ConversationItem.conversation_pk == conversation.pk)
        .order_by(ConversationItem.pk)
    )
    return list((await session.scalars(statement)).all())
