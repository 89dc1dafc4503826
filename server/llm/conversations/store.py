"""The conversations and conversation_items tables and the queries on them.

Every query is scoped to the owning user: a conversation (and so its items) of another user does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Select, String, Text, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, RowKey, UtcDateTime, utcnow
from server.core.ids import new_id
from server.llm.conversations.items import NewItem


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


async def recent_items(session: AsyncSession, conversation: Conversation, limit: int) -> list[ConversationItem]:
    """The newest `limit` items of a conversation, oldest first (the order a prompt replays them in)."""
    statement = (
        select(ConversationItem)
        .where(ConversationItem.conversation_pk == conversation.pk)
        .order_by(ConversationItem.pk.desc())
        .limit(limit)
    )
    return list(reversed((await session.scalars(statement)).all()))


# The queries of the Conversations API. A write transaction starts with a write (an UPDATE that also proves
# ownership), so on SQLite it holds the write lock from its first statement instead of upgrading a read.


def owned_conversations(user_id: str, *, project_id: str | None = None, referrer: str | None = None) -> Select[Any]:
    """The user's conversations, optionally of one project or referrer, unordered (pagination orders them)."""
    statement = select(Conversation).where(Conversation.user_id == user_id)
    if project_id is not None:
        statement = statement.where(Conversation.project_id == project_id)
    if referrer is not None:
        statement = statement.where(Conversation.referrer == referrer)
    return statement


def items_of(conversation: Conversation) -> Select[Any]:
    """A conversation's items, unordered (pagination orders them)."""
    return select(ConversationItem).where(ConversationItem.conversation_pk == conversation.pk)


async def add_conversation(
    session: AsyncSession, user_id: str, *, title: str | None, metadata: dict[str, str], referrer: str | None
) -> Conversation:
    conversation = Conversation(user_id=user_id, title=title, metadata_=metadata, referrer=referrer)
    session.add(conversation)
    await session.flush()
    return conversation


async def update_owned_conversation(
    session: AsyncSession, user_id: str, conversation_id: str, values: dict[str, Any]
) -> Conversation | None:
    """Sets `values` (attribute names) and bumps `updated_at`; None if the user has no such conversation."""
    statement = (
        update(Conversation)
        .where(Conversation.id == conversation_id, Conversation.user_id == user_id)
        .values(**values, updated_at=utcnow())
        .returning(Conversation)
        .execution_options(synchronize_session=False)
    )
    return await session.scalar(statement)


async def touch_owned_conversation(
    session: AsyncSession, user_id: str, conversation_id: str, *, title_if_untitled: str | None = None
) -> Conversation | None:
    """Bumps `updated_at` (and titles an untitled conversation); None if the user has no such conversation."""
    values: dict[str, Any] = {}
    if title_if_untitled is not None:
        values["title"] = func.coalesce(Conversation.title, title_if_untitled)
    return await update_owned_conversation(session, user_id, conversation_id, values)


async def delete_owned_conversation(session: AsyncSession, user_id: str, conversation_id: str) -> bool:
    """Deletes the conversation (its items go with it: ON DELETE CASCADE); False if the user has none such."""
    result = await session.execute(
        delete(Conversation).where(Conversation.id == conversation_id, Conversation.user_id == user_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def taken_item_ids(session: AsyncSession, item_ids: list[str]) -> set[str]:
    """Which of these item ids are already stored, in any conversation (ids are unique across the table)."""
    if not item_ids:
        return set()
    return set((await session.scalars(select(ConversationItem.id).where(ConversationItem.id.in_(item_ids)))).all())


async def add_items(session: AsyncSession, conversation: Conversation, items: list[NewItem]) -> list[ConversationItem]:
    """Appends the items in the given order, all with the same `created_at`."""
    now = utcnow()
    rows = [
        ConversationItem(
            conversation_pk=conversation.pk,
            type=item.type,
            status=item.status,
            role=item.role,
            content=item.content,
            call_id=item.call_id,
            name=item.name,
            arguments=item.arguments,
            output=item.output,
            created_at=now,
            **({"id": item.id} if item.id is not None else {}),
        )
        for item in items
    ]
    session.add_all(rows)
    await session.flush()
    return rows


async def get_item(session: AsyncSession, conversation: Conversation, item_id: str) -> ConversationItem | None:
    return await session.scalar(
        select(ConversationItem).where(
            ConversationItem.conversation_pk == conversation.pk, ConversationItem.id == item_id
        )
    )


async def delete_item(session: AsyncSession, conversation: Conversation, item_id: str) -> bool:
    result = await session.execute(
        delete(ConversationItem).where(
            ConversationItem.conversation_pk == conversation.pk, ConversationItem.id == item_id
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
