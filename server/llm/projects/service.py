"""Projects domain: validating what clients send, and the create/list/get/update/delete rules. No gRPC here.

Names are unique per user. Two requests racing to take the same name both pass any check made before the
insert, so the unique constraint decides, and its violation is answered as the same 409 as a plain duplicate.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.db import UtcDateTime, utcnow
from server.core.errors import ApiError, invalid_request
from server.core.json_body import optional_bool, optional_str, type_error
from server.core.pagination import Page, PageRequest, paginate
from server.llm.projects import store
from server.llm.projects.store import Project

MAX_NAME_LENGTH = 120
MAX_INSTRUCTION_LENGTH = 32768
_PROJECT_ID = re.compile(r"proj_[a-z0-9]+")


@dataclass(frozen=True)
class NewProject:
    name: str
    instruction: str | None


@dataclass(frozen=True)
class ProjectChanges:
    """The fields a PATCH body names; None means "leave as it is" (except `instruction`, see `sets_instruction`)."""

    name: str | None = None
    sets_instruction: bool = False
    instruction: str | None = None
    is_favorite: bool | None = None
    is_archived: bool | None = None


def parse_new_project(payload: dict[str, Any]) -> NewProject:
    if payload.get("name") is None:
        raise invalid_request("'name' is required", param="name", code="missing_required_parameter")
    return NewProject(name=_valid_name(payload["name"]), instruction=_instruction(payload))


def parse_project_changes(payload: dict[str, Any]) -> ProjectChanges:
    name = payload.get("name")
    return ProjectChanges(
        name=None if name is None else _valid_name(name),
        sets_instruction="instruction" in payload,
        instruction=_instruction(payload),
        is_favorite=optional_bool(payload, "is_favorite"),
        is_archived=optional_bool(payload, "is_archived"),
    )


def check_project_id(project_id: str) -> None:
    """A malformed id is a client mistake (400); a well-formed one that names nothing of the caller's is 404."""
    if not _PROJECT_ID.fullmatch(project_id):
        raise invalid_request(
            f"Invalid project id '{project_id}': expected 'proj_' followed by lowercase letters and digits",
            param="project_id", code="invalid_project_id",
        )


def _valid_name(raw: Any) -> str:
    if not isinstance(raw, str):
        raise type_error("name", "a string")
    name = raw.strip()
    if not name:
        raise invalid_request("'name' must not be empty", param="name")
    if len(name) > MAX_NAME_LENGTH:
        raise invalid_request(f"'name' must be at most {MAX_NAME_LENGTH} characters", param="name")
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise invalid_request("'name' must not contain control characters", param="name")
    return name


def _instruction(payload: dict[str, Any]) -> str | None:
    """The instruction, with "" meaning none."""
    return optional_str(payload, "instruction", max_length=MAX_INSTRUCTION_LENGTH) or None


def _not_found(project_id: str) -> ApiError:
    return ApiError(404, f"No project found with id '{project_id}'", code="not_found", param="project_id")


def _name_taken(name: str) -> ApiError:
    return ApiError(409, f"You already have a project named '{name}'", code="project_name_taken", param="name")


class ProjectService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def create(self, user_id: str, new: NewProject) -> Project:
        try:
            async with self._sessions.begin() as session:
                return await store.add_project(session, user_id, new.name, new.instruction)
        except IntegrityError:
            await self._raise_if_name_taken(user_id, new.name)
            raise

    async def list_page(self, user_id: str, page: PageRequest) -> Page[Project]:
        async with self._sessions() as session:
            return await paginate(
                session, store.owned_projects(user_id), pk=Project.pk, public_id=Project.id, page=page
            )

    async def get(self, user_id: str, project_id: str) -> Project:
        check_project_id(project_id)
        async with self._sessions() as session:
            project = await store.get_owned_project(session, user_id, project_id)
        if project is None:
            raise _not_found(project_id)
        return project

    async def update(self, user_id: str, project_id: str, changes: ProjectChanges) -> Project:
        check_project_id(project_id)
        values = _column_values(changes)
        if not values:
            return await self.get(user_id, project_id)
        try:
            async with self._sessions.begin() as session:
                project = await store.update_owned_project(session, user_id, project_id, values)
        except IntegrityError:
            if changes.name is not None:
                await self._raise_if_name_taken(user_id, changes.name, other_than=project_id)
            raise
        if project is None:
            raise _not_found(project_id)
        return project

    async def delete(self, user_id: str, project_id: str) -> None:
        check_project_id(project_id)
        async with self._sessions.begin() as session:
            deleted = await store.delete_owned_project(session, user_id, project_id)
        if not deleted:
            raise _not_found(project_id)

    async def _raise_if_name_taken(self, user_id: str, name: str, *, other_than: str | None = None) -> None:
        """After a failed write: 409 if the name is why (the failed transaction is gone, so look anew)."""
        async with self._sessions() as session:
            if await store.has_project_named(session, user_id, name, other_than=other_than):
                raise _name_taken(name) from None


def _column_values(changes: ProjectChanges) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if changes.name is not None:
        values["name"] = changes.name
    if changes.sets_instruction:
        values["instruction"] = changes.instruction
    if changes.is_favorite is not None:
        values["is_favorite"] = changes.is_favorite
    if changes.is_archived is not None:
        # Archiving an archived project keeps when it was first archived.
        now = literal(utcnow(), UtcDateTime())
        values["archived_at"] = func.coalesce(Project.archived_at, now) if changes.is_archived else None
    return values
