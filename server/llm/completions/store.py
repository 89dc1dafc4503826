"""The chat_completions and chat_completion_messages tables and the queries on them.

A stored chat completion is kept as the JSON objects OpenAI's API shows: the `chat.completion` object as it was
answered, and each request message in OpenAI's stored-message shape. Every query is scoped to the owning user:
another user's completion does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Select, String, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, RowKey, UtcDateTime, utcnow


class StoredCompletion(Base):
    __tablename__ = "chat_completions"
    __table_args__ = (
        Index("ix_chat_completions_user_id_pk", "user_id", "pk"),
        Index("ix_chat_completions_user_id_model_pk", "user_id", "model", "pk"),
    )

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    # The `chatcmpl-…` id the completion was answered with.
    id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(256))
    # `metadata` is reserved on declarative classes, hence the attribute name.
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON, default=dict)
    # The `chat.completion` object as returned (a streamed one in its non-stream form), without `metadata`.
    completion: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class StoredMessage(Base):
    """One request message of a stored completion, in OpenAI's stored-message shape (`message` holds it whole)."""

    __tablename__ = "chat_completion_messages"
    __table_args__ = (Index("ix_chat_completion_messages_completion_pk_pk", "completion_pk", "pk"),)

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    # `<completion id>-<index>`, as OpenAI numbers them.
    id: Mapped[str] = mapped_column(String(80), unique=True)
    completion_pk: Mapped[int] = mapped_column(ForeignKey("chat_completions.pk", ondelete="CASCADE"))
    message: Mapped[dict[str, Any]] = mapped_column(JSON)


async def add_completion(
    session: AsyncSession,
    user_id: str,
    completion: dict[str, Any],
    messages: list[dict[str, Any]],
    metadata: dict[str, str],
) -> StoredCompletion:
    """Stores the completion and its request messages (each given without `id`; ids are assigned here)."""
    stored = StoredCompletion(
        id=completion["id"], user_id=user_id, model=completion["model"], metadata_=metadata, completion=completion
    )
    session.add(stored)
    await session.flush()
    session.add_all(
        StoredMessage(id=f"{stored.id}-{index}", completion_pk=stored.pk, message={"id": f"{stored.id}-{index}", **m})
        for index, m in enumerate(messages)
    )
    return stored


def owned_completions(user_id: str, *, model: str | None = None, metadata: dict[str, str] | None = None) -> Select[Any]:
    """The user's stored completions, optionally of one model and with these metadata pairs, unordered."""
    statement = select(StoredCompletion).where(StoredCompletion.user_id == user_id)
    if model is not None:
        statement = statement.where(StoredCompletion.model == model)
    for key, value in (metadata or {}).items():
        statement = statement.where(StoredCompletion.metadata_[key].as_string() == value)
    return statement


async def get_owned_completion(session: AsyncSession, user_id: str, completion_id: str) -> StoredCompletion | None:
    return await session.scalar(
        select(StoredCompletion).where(StoredCompletion.id == completion_id, StoredCompletion.user_id == user_id)
    )


def messages_of(completion: StoredCompletion) -> Select[Any]:
    """A stored completion's request messages, unordered (pagination orders them)."""
    return select(StoredMessage).where(StoredMessage.completion_pk == completion.pk)


async def set_owned_metadata(
    session: AsyncSession, user_id: str, completion_id: str, metadata: dict[str, str]
) -> StoredCompletion | None:
    """Replaces the metadata; None if the user has no such completion."""
    statement = (
        update(StoredCompletion)
        .where(StoredCompletion.id == completion_id, StoredCompletion.user_id == user_id)
        .values(metadata_=metadata)
        .returning(StoredCompletion)
        .execution_options(synchronize_session=False)
    )
    return await session.scalar(statement)


async def delete_owned_completion(session: AsyncSession, user_id: str, completion_id: str) -> bool:
    """Deletes the completion (its messages go with it: ON DELETE CASCADE); False if the user has none such."""
    result = await session.execute(
        delete(StoredCompletion).where(StoredCompletion.id == completion_id, StoredCompletion.user_id == user_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
