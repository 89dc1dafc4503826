"""Stored chat completions (OpenAI's `store: true`): keep a finished completion, then list, read, re-tag and delete
them. No gRPC here; results are the JSON objects OpenAI's API shows.

Everything is scoped to the calling user; another user's completion is reported exactly like a missing one (404).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.errors import ApiError, invalid_request
from server.core.json_body import parse_metadata, parse_object
from server.core.pagination import Page, PageRequest, list_fields, paginate
from server.llm.completions import store
from server.llm.completions.store import StoredCompletion, StoredMessage


def completion_not_found(completion_id: str) -> ApiError:
    return ApiError(404, f"Chat completion '{completion_id}' not found", code="chat_completion_not_found")


def completion_object(stored: StoredCompletion) -> dict[str, Any]:
    return {**stored.completion, "metadata": stored.metadata_ or {}}


def _list_object(page: Page[Any], data: list[dict[str, Any]]) -> dict[str, Any]:
    # OpenAI prints first_id and last_id as null on an empty page.
    return {**list_fields(page), "data": data, "first_id": page.first_id, "last_id": page.last_id}


class StoredCompletions:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def add(
        self, user_id: str, completion: dict[str, Any], messages: list[dict[str, Any]], metadata: dict[str, str]
    ) -> None:
        """Keeps a finished completion: the object as answered and the request's messages (without ids)."""
        async with self._sessions.begin() as session:
            await store.add_completion(session, user_id, completion, messages, metadata)

    async def list_completions(
        self, user_id: str, page: PageRequest, *, model: str | None, metadata: dict[str, str]
    ) -> dict[str, Any]:
        statement = store.owned_completions(user_id, model=model, metadata=metadata)
        async with self._sessions() as session:
            listed = await paginate(session, statement, pk=StoredCompletion.pk, public_id=StoredCompletion.id,
                                    page=page)
        return _list_object(listed, [completion_object(row) for row in listed.rows])

    async def get(self, user_id: str, completion_id: str) -> dict[str, Any]:
        async with self._sessions() as session:
            return completion_object(await self._owned(session, user_id, completion_id))

    async def list_messages(self, user_id: str, completion_id: str, page: PageRequest) -> dict[str, Any]:
        async with self._sessions() as session:
            completion = await self._owned(session, user_id, completion_id)
            listed = await paginate(session, store.messages_of(completion), pk=StoredMessage.pk,
                                    public_id=StoredMessage.id, page=page)
        return _list_object(listed, [row.message for row in listed.rows])

    async def update(self, user_id: str, completion_id: str, body: bytes) -> dict[str, Any]:
        """Replaces the metadata, the one field OpenAI lets a client change (null clears it)."""
        payload = parse_object(body)
        if "metadata" not in payload:
            raise invalid_request("Parameter 'metadata' is required", param="metadata",
                                  code="missing_required_parameter")
        metadata = parse_metadata(payload["metadata"])
        async with self._sessions.begin() as session:
            stored = await store.set_owned_metadata(session, user_id, completion_id, metadata)
            if stored is None:
                raise completion_not_found(completion_id)
            return completion_object(stored)

    async def delete(self, user_id: str, completion_id: str) -> None:
        async with self._sessions.begin() as session:
            if not await store.delete_owned_completion(session, user_id, completion_id):
                raise completion_not_found(completion_id)

    async def _owned(self, session: AsyncSession, user_id: str, completion_id: str) -> StoredCompletion:
        completion = await store.get_owned_completion(session, user_id, completion_id)
        if completion is None:
            raise completion_not_found(completion_id)
        return completion
