"""Responses domain: create (run the orchestration), get, delete, cancel, and list a response's input items.

Everything is scoped to the calling user; another user's response is reported exactly like a missing one (404).
A request is validated whole (body, model, tools, history) before anything is stored or run, so a rejected one
leaves no trace. History comes from `previous_response_id` (the chain of earlier responses' input and output
items) or from a conversation of the Conversations API, to which the finished turn is then appended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.errors import ApiError, internal_error, invalid_request
from server.core.ids import new_id
from server.core.pagination import PageRequest, list_fields, paginate
from server.core.rpc_client import CallerMetadata
from server.llm.conversations import store as conversations
from server.responses import store
from server.responses.background import RunningResponses
from server.responses.events import EventStream
from server.responses.items import SERVER_LABEL, Item, chat_messages, from_conversation, to_conversation
from server.responses.llm_client import LlmClient
from server.responses.mcp_client import McpClient, McpTool
from server.responses.orchestrator import Orchestrator, Run, ToolSpec
from server.responses.request import ResponseRequest, parse_create_request
from server.responses.state import ResponseState

log = logging.getLogger(__name__)

EMPTY_PARAMETERS = {"type": "object", "properties": {}}
RESTARTED = {"code": "server_restarted",
             "message": "The server stopped while this response was running, so it did not finish. Create it again."}


def response_not_found(response_id: str, param: str | None = None) -> ApiError:
    return ApiError(404, f"Response '{response_id}' not found", code="response_not_found", param=param)


@dataclass
class Created:
    """What create answers: the response object, or (streaming) its events as they are produced."""

    response: dict[str, Any] | None = None
    events: EventStream | None = None
    task: asyncio.Task[None] | None = None


class ResponseService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], llm: LlmClient, mcp: McpClient, *, public_url: str,
        max_steps: int, history_items: int, orchestrator: type[Orchestrator] = Orchestrator,
    ) -> None:
        self._sessions = sessions
        self._mcp = mcp
        self._llm = llm
        self._orchestrator = orchestrator(llm, mcp, max_steps)
        self._public_url = public_url
        self._history_items = history_items
        self.running = RunningResponses()
        # Responses being produced by this process: GET shows their output so far.
        self._live: dict[str, ResponseState] = {}

    async def create(self, caller: CallerMetadata, body: bytes) -> Created:
        request = parse_create_request(body, self._public_url)
        await self._llm.check_model(request.model, caller)
        tools = await self._tools(request, caller)
        history = await self._history(caller.user_id, request)
        state = ResponseState(
            id=new_id("resp"), model=request.model, created_at=int(time.time()),
            status="queued" if request.background else "in_progress", settings=request.settings,
            background=request.background, previous_response_id=request.previous_response_id,
            conversation_id=request.conversation_id,
        )
        if request.store:
            async with self._sessions.begin() as session:
                row = store.StoredResponse(
                    id=state.id, user_id=caller.user_id, model=state.model, status=state.status,
                    background=state.background, previous_response_id=state.previous_response_id,
                    conversation_id=state.conversation_id, settings=state.settings,
                    # The same second the answer reports, or a retrieve could differ from it by one.
                    created_at=datetime.fromtimestamp(state.created_at, UTC),
                )
                await store.add_response(session, row, request.input)
        messages = [{"role": "system", "content": request.instructions}] if request.instructions else []
        messages += chat_messages(history + request.input)
        run = Run(state, request, caller, tools, EventStream(request.stream))
        self._live[state.id] = state
        task = self.running.start(state.id, self._execute(run, messages))
        if request.background:
            return Created(response=state.to_json())
        if request.stream:
            return Created(events=run.events, task=task)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.cancel()  # the caller went away: stop the model
            raise
        if state.failure is not None:
            raise state.failure
        return Created(response=state.to_json())

    async def _execute(self, run: Run, messages: list[dict[str, Any]]) -> None:
        try:
            await self._produce(run, messages)
        finally:
            self._live.pop(run.state.id, None)

    async def _produce(self, run: Run, messages: list[dict[str, Any]]) -> None:
        state, events = run.state, run.events
        try:
            if state.status == "queued":
                state.status = "in_progress"
                if run.request.store:
                    async with self._sessions.begin() as session:
                        await store.set_status(session, state.id, state.status)
            events.emit("response.created", response=state.to_json())
            events.emit("response.in_progress", response=state.to_json())
            await self._orchestrator.run(run, messages)
        except asyncio.CancelledError:
            state.status, state.completed_at = "cancelled", int(time.time())
            state.end_open_items()
            await self._save(run)
            events.close()
            raise
        except ApiError as error:
            state.fail(error)
        except Exception:
            log.exception("response %s failed", state.id)
            state.fail(internal_error())
        state.completed_at = int(time.time())
        state.end_open_items()
        await self._save(run)
        terminal = {"completed": "response.completed", "incomplete": "response.incomplete"}
        events.emit(terminal.get(state.status, "response.failed"), response=state.to_json())
        events.close()

    async def _save(self, run: Run) -> None:
        state, request = run.state, run.request
        if not request.store:
            return
        async with self._sessions.begin() as session:
            await store.finish(session, state.id, status=state.status, output=state.output, usage=state.usage,
                               error=state.error, incomplete_details=state.incomplete_details)
            if state.conversation_id is not None and state.status in ("completed", "incomplete"):
                conversation = await conversations.touch_owned_conversation(
                    session, run.caller.user_id, state.conversation_id
                )
                if conversation is not None:  # deleted meanwhile
                    await conversations.add_items(session, conversation, to_conversation(request.input + state.output))

    async def get(self, user_id: str, response_id: str) -> dict[str, Any]:
        async with self._sessions() as session:
            row = await store.get_owned(session, user_id, response_id)
            if row is None:
                raise response_not_found(response_id)
            live = self._live.get(response_id)
            if live is not None:
                return live.to_json()
            return _state(row, await store.items(session, row, store.OUTPUT)).to_json()

    async def delete(self, user_id: str, response_id: str) -> None:
        await self.get(user_id, response_id)
        await self.running.cancel(response_id)
        async with self._sessions.begin() as session:
            if not await store.delete_owned(session, user_id, response_id):
                raise response_not_found(response_id)

    async def cancel(self, user_id: str, response_id: str) -> dict[str, Any]:
        """Stops a running response; one that has finished is returned as it is."""
        response = await self.get(user_id, response_id)
        if response["status"] not in store.UNFINISHED:
            return response
        if not await self.running.cancel(response_id):
            async with self._sessions.begin() as session:  # left over by a process that is gone
                await store.set_status(session, response_id, "cancelled")
        return await self.get(user_id, response_id)

    async def list_input_items(self, user_id: str, response_id: str, page: PageRequest) -> dict[str, Any]:
        async with self._sessions() as session:
            row = await store.get_owned(session, user_id, response_id)
            if row is None:
                raise response_not_found(response_id)
            listed = await paginate(session, store.input_items_of(row), pk=store.StoredItem.pk,
                                    public_id=store.StoredItem.id, page=page)
        return {**list_fields(listed), "data": [item.data for item in listed.rows],
                "first_id": listed.first_id, "last_id": listed.last_id}

    async def recover(self, started_at: datetime) -> None:
        """Responses left queued or running by an earlier process will never finish: mark them failed."""
        async with self._sessions.begin() as session:
            count = await store.fail_unfinished(session, started_at, RESTARTED)
        if count:
            log.warning("marked %d responses left unfinished by an earlier process as failed", count)

    async def _tools(self, request: ResponseRequest, caller: CallerMetadata) -> dict[str, ToolSpec]:
        """The tools offered to the model, by name. No `tools` at all means every available MCP tool."""
        if request.tools_given and not (request.function_tools or request.mcp_tool_names or request.mcp_servers):
            listed: dict[str, McpTool] = {}
        else:
            listed = {tool.name: tool for tool in await self._mcp.list_tools(caller)}
        tools: dict[str, ToolSpec] = {}

        def offer(tool: McpTool, label: str) -> None:
            tools[tool.name] = ToolSpec(tool.name, tool.description, tool.input_schema, label)

        if not request.tools_given:
            for tool in listed.values():
                if tool.available:
                    offer(tool, SERVER_LABEL)
        for name in request.mcp_tool_names:
            if name not in listed:
                raise invalid_request(f"'tools' names '{name}', which is not one of this server's MCP tools "
                                      f"({', '.join(listed)})", param="tools")
            offer(listed[name], SERVER_LABEL)
        for server in request.mcp_servers:
            names = server.allowed_tools or [tool.name for tool in listed.values() if tool.available]
            for name in names:
                if name not in listed:
                    raise invalid_request(f"'allowed_tools' names '{name}', which is not one of this server's MCP "
                                          "tools", param="tools")
                offer(listed[name], server.server_label)
        for function in request.function_tools:
            if function.name in listed:  # an MCP tool named as a function: it runs here
                offer(listed[function.name], SERVER_LABEL)
            else:
                tools[function.name] = ToolSpec(function.name, function.description,
                                                function.parameters or EMPTY_PARAMETERS)
        choice = request.tool_choice
        if choice.mode == "named" and choice.name not in tools:
            raise invalid_request(f"'tool_choice' names '{choice.name}', which is not among the offered tools",
                                  param="tool_choice")
        if choice.mode == "required" and not tools:
            raise invalid_request("'tool_choice' is 'required' but no tools are offered", param="tool_choice")
        return tools

    async def _history(self, user_id: str, request: ResponseRequest) -> list[Item]:
        """Items before this turn, oldest first: the previous responses' chain, or the conversation's items."""
        history: list[Item] = []
        async with self._sessions() as session:
            if request.previous_response_id is not None:
                previous_id: str | None = request.previous_response_id
                while previous_id is not None and len(history) < self._history_items:
                    row = await store.get_owned(session, user_id, previous_id)
                    if row is None:
                        if previous_id == request.previous_response_id:
                            raise response_not_found(previous_id, param="previous_response_id")
                        break  # an earlier link was deleted: the history starts after it
                    history[:0] = await store.items(session, row, store.INPUT) + await store.items(
                        session, row, store.OUTPUT
                    )
                    previous_id = row.previous_response_id
            elif request.conversation_id is not None:
                conversation = await conversations.get_owned_conversation(session, user_id, request.conversation_id)
                if conversation is None:
                    raise ApiError(404, f"Conversation '{request.conversation_id}' not found",
                                   code="conversation_not_found", param="conversation")
                rows = await conversations.recent_items(session, conversation, self._history_items)
                history = [from_conversation(row) for row in rows]
        history = history[-self._history_items:]
        while history and history[0]["type"] == "function_call_output":
            history.pop(0)  # its call was cut off: a tool message must follow the call it answers
        return history


def _state(row: store.StoredResponse, output: list[Item]) -> ResponseState:
    return ResponseState(
        id=row.id, model=row.model, created_at=int(row.created_at.timestamp()), status=row.status,
        settings=row.settings, background=row.background, previous_response_id=row.previous_response_id,
        conversation_id=row.conversation_id, output=output, usage=row.usage, error=row.error,
        incomplete_details=row.incomplete_details,
        completed_at=int(row.completed_at.timestamp()) if row.completed_at else None,
    )
