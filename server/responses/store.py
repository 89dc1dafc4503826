"""The responses and response_items tables and the queries on them.

A response row holds its lifecycle (status, usage, error) and the request fields its JSON object echoes
(`settings`); its items (what the caller sent, and what the model and the tools produced) are rows of
response_items in OpenAI's item JSON, ordered by `pk`. Every query is scoped to the owning user: another user's
response does not exist.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Select, String, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, RowKey, UtcDateTime, utcnow

INPUT = "input"
OUTPUT = "output"
# Statuses of a response that has not finished: after a restart nothing is running them any more.
UNFINISHED = ("queued", "in_progress")


class StoredResponse(Base):
    __tablename__ = "responses"
    __table_args__ = (
        Index("ix_responses_user_id_pk", "user_id", "pk"),
        Index("ix_responses_status", "status"),
    )

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(256))
    # queued | in_progress | completed | incomplete | failed | cancelled
    status: Mapped[str] = mapped_column(String(16))
    background: Mapped[bool] = mapped_column(Boolean, default=False)
    previous_response_id: Mapped[str | None] = mapped_column(String(64))
    conversation_id: Mapped[str | None] = mapped_column(String(64))
    # The request fields the response object echoes: instructions, tools, tool_choice, temperature, metadata, …
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    incomplete_details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class StoredItem(Base):
    """One input or output item of a response, whole, in OpenAI's JSON (`data`, which includes `id`)."""

    __tablename__ = "response_items"
    __table_args__ = (Index("ix_response_items_response_pk_kind_pk", "response_pk", "kind", "pk"),)

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64))
    response_pk: Mapped[int] = mapped_column(ForeignKey("responses.pk", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(8))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


async def add_response(session: AsyncSession, response: StoredResponse, inputs: list[dict[str, Any]]) -> None:
    session.add(response)
    await session.flush()
    _add_items(session, response.pk, INPUT, inputs)
    await session.flush()


def _add_items(session: AsyncSession, response_pk: int, kind: str, items: list[dict[str, Any]]) -> None:
    session.add_all(StoredItem(id=item["id"], response_pk=response_pk, kind=kind, data=item) for item in items)


async def get_owned(session: AsyncSession, user_id: str, response_id: str) -> StoredResponse | None:
    return await session.scalar(
        select(StoredResponse).where(StoredResponse.id == response_id, StoredResponse.user_id == user_id)
    )


async def items(session: AsyncSession, response: StoredResponse, kind: str) -> list[dict[str, Any]]:
    statement = (
        select(StoredItem.data)
        .where(StoredItem.response_pk == response.pk, StoredItem.kind == kind)
        .order_by(StoredItem.pk)
    )
    return list((await session.scalars(statement)).all())


def input_items_of(response: StoredResponse) -> Select[Any]:
    """A response's input items, unordered (pagination orders them)."""
    return select(StoredItem).where(StoredItem.response_pk == response.pk, StoredItem.kind == INPUT)


async def finish(
    session: AsyncSession,
    response_id: str,
    *,
    status: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    error: dict[str, Any] | None,
    incomplete_details: dict[str, Any] | None,
) -> None:
    """Records how a response ended and its output items (a response deleted meanwhile stays deleted)."""
    response = await session.scalar(select(StoredResponse).where(StoredResponse.id == response_id))
    if response is None:
        return
    response.status = status
    response.usage = usage
    response.error = error
    response.incomplete_details = incomplete_details
    response.completed_at = utcnow()
    _add_items(session, response.pk, OUTPUT, output)


async def set_status(session: AsyncSession, response_id: str, status: str) -> None:
    await session.execute(update(StoredResponse).where(StoredResponse.id == response_id).values(status=status))


async def delete_owned(session: AsyncSession, user_id: str, response_id: str) -> bool:
    result = await session.execute(
        delete(StoredResponse).where(StoredResponse.id == response_id, StoredResponse.user_id == user_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def fail_unfinished(session: AsyncSession, before: datetime, error: dict[str, Any]) -> int:
    """Marks responses left queued or running by a process that is gone as failed; returns how many."""
    result = await session.execute(
        update(StoredResponse)
        .where(StoredResponse.status.in_(UNFINISHED), StoredResponse.created_at < before)
        .values(status="failed", error=error, completed_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
