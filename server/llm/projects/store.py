"""The projects table and the queries on it. Every query is scoped to the owning user.

Writes are single statements (INSERT, UPDATE … RETURNING, DELETE) rather than read-then-write, so concurrent
requests cannot lose each other's changes, and on SQLite a transaction never has to upgrade a read snapshot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Select, String, Text, UniqueConstraint, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from server.core.db import Base, RowKey, UtcDateTime, utcnow
from server.core.ids import new_id


class Project(Base):
    __tablename__ = "projects"
    __table_args__ = (
        UniqueConstraint("user_id", "name"),
        Index("ix_projects_user_id_pk", "user_id", "pk"),
    )

    pk: Mapped[int] = mapped_column(RowKey, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, default=lambda: new_id("proj"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(120))
    instruction: Mapped[str | None] = mapped_column(Text)
    is_favorite: Mapped[bool] = mapped_column(Boolean, default=False)
    archived_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


async def get_owned_project(session: AsyncSession, user_id: str, project_id: str) -> Project | None:
    """The project with this public id if `user_id` owns it; None otherwise (callers answer 404)."""
    return await session.scalar(select(Project).where(Project.id == project_id, Project.user_id == user_id))


def owned_projects(user_id: str) -> Select[Project]:
    """Every project of `user_id`, unordered (pagination orders it)."""
    return select(Project).where(Project.user_id == user_id)


async def add_project(session: AsyncSession, user_id: str, name: str, instruction: str | None) -> Project:
    """Inserts a project; a name the user already has raises IntegrityError (uq_projects_user_id_name)."""
    project = Project(user_id=user_id, name=name, instruction=instruction, is_favorite=False)
    session.add(project)
    await session.flush()
    return project


async def has_project_named(session: AsyncSession, user_id: str, name: str, *, other_than: str | None = None) -> bool:
    """Whether `user_id` has a project called `name` (besides the project `other_than`)."""
    statement = select(Project.pk).where(Project.user_id == user_id, Project.name == name)
    if other_than is not None:
        statement = statement.where(Project.id != other_than)
    return await session.scalar(statement.limit(1)) is not None


async def update_owned_project(
    session: AsyncSession, user_id: str, project_id: str, values: dict[str, Any]
) -> Project | None:
    """Sets `values` on the user's project and returns it updated; None if the user has no such project.
    A name the user already has raises IntegrityError."""
    statement = (
        update(Project)
        .where(Project.id == project_id, Project.user_id == user_id)
        .values(**values, updated_at=utcnow())
        .returning(Project)
        .execution_options(synchronize_session=False)
    )
    return await session.scalar(statement)


async def delete_owned_project(session: AsyncSession, user_id: str, project_id: str) -> bool:
    """Deletes the user's project (its conversations are detached by ON DELETE SET NULL); False if none."""
    result = await session.execute(delete(Project).where(Project.id == project_id, Project.user_id == user_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]
