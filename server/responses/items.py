"""Response items in OpenAI's JSON shapes, and their translation to and from chat-completions messages.

Output items are `message` (assistant text as `output_text` parts), `function_call` (a client-side tool the caller
runs) and `mcp_call` (a server tool run here, with its output or error). History items become chat messages:
function and MCP calls an assistant message with `tool_calls`, their outputs `tool` messages.
"""

from __future__ import annotations

import json
from typing import Any

from server.llm.conversations.items import NewItem
from server.llm.conversations.store import ConversationItem

Item = dict[str, Any]
SERVER_LABEL = "jan"


def message_item(item_id: str, text: str, status: str) -> Item:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [output_text_part(text)]}


def output_text_part(text: str) -> Item:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> Item:
    return {"id": item_id, "type": "function_call", "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def mcp_call_item(item_id: str, name: str, arguments: str, server_label: str, status: str) -> Item:
    return {"id": item_id, "type": "mcp_call", "name": name, "arguments": arguments, "server_label": server_label,
            "output": None, "error": None, "status": status, "approval_request_id": None}


def output_text(output: list[Item]) -> str:
    """OpenAI's convenience field: the text of every output_text part, joined."""
    return "".join(
        part.get("text", "")
        for item in output if item.get("type") == "message"
        for part in item.get("content") or () if part.get("type") == "output_text"
    )


def chat_messages(items: list[Item]) -> list[dict[str, Any]]:
    """History and input items as chat-completions messages: the tool calls of one model turn go in one assistant
    message (with the turn's text, if any), followed by one `tool` message per output."""
    messages: list[dict[str, Any]] = []
    calls: dict[str, Any] | None = None
    outputs: list[dict[str, Any]] = []
    answered = False  # a function_call_output came: the next call belongs to a later turn

    def flush() -> None:
        nonlocal calls, answered
        messages.extend(outputs)
        outputs.clear()
        calls, answered = None, False

    for item in items:
        kind = item.get("type")
        if kind in ("function_call", "mcp_call"):
            if answered:
                flush()
            if calls is None:
                last = messages[-1] if messages else None
                if last is not None and last["role"] == "assistant" and "tool_calls" not in last:
                    calls = last  # the text the model wrote before calling
                else:
                    calls = {"role": "assistant", "content": None}
                    messages.append(calls)
                calls["tool_calls"] = []
            call_id = item.get("call_id") or item["id"]
            calls["tool_calls"].append(
                {"id": call_id, "type": "function", "function": {"name": item["name"], "arguments": item["arguments"]}}
            )
            if kind == "mcp_call":
                result = item.get("output") if item.get("output") is not None else item.get("error")
                outputs.append({"role": "tool", "tool_call_id": call_id, "content": str(result or "")})
        elif kind == "function_call_output":
            outputs.append({"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]})
            answered = True
        else:
            flush()
            if kind == "message":
                messages.append(_chat_message(item))
    flush()
    return messages


def _chat_message(item: Item) -> dict[str, Any]:
    role = "system" if item["role"] == "developer" else item["role"]
    parts = item.get("content") or []
    if all(part["type"] in ("input_text", "output_text") for part in parts):
        return {"role": role, "content": "".join(part["text"] for part in parts)}
    content: list[dict[str, Any]] = []
    for part in parts:
        if part["type"] in ("input_text", "output_text"):
            content.append({"type": "text", "text": part["text"]})
        elif part["type"] == "input_image" and "image_url" in part:
            content.append({"type": "image_url", "image_url": {"url": part["image_url"], "detail": part["detail"]}})
        elif part["type"] == "refusal":
            content.append({"type": "text", "text": part["refusal"]})
    return {"role": role, "content": content}


def from_conversation(row: ConversationItem) -> Item:
    """A stored conversation item as a response item (only what chat_messages reads)."""
    return {"id": row.id, "type": row.type, "role": row.role, "content": row.content, "call_id": row.call_id,
            "name": row.name, "arguments": row.arguments, "output": row.output}


def to_conversation(items: list[Item]) -> list[NewItem]:
    """Items to append to a conversation: an mcp_call becomes a function_call and its function_call_output."""
    rows: list[NewItem] = []
    for item in items:
        kind = item["type"]
        status = item.get("status") if item.get("status") in ("completed", "in_progress", "incomplete") else "completed"
        if kind == "message":
            rows.append(NewItem(type="message", role=item["role"], content=_conversation_content(item),
                                status=status or "completed"))
        elif kind == "function_call":
            rows.append(NewItem(type="function_call", call_id=item["call_id"], name=item["name"],
                                arguments=item["arguments"], status=status or "completed"))
        elif kind == "function_call_output":
            rows.append(NewItem(type="function_call_output", call_id=item["call_id"], output=item["output"]))
        elif kind == "mcp_call":
            result = item.get("output") if item.get("output") is not None else item.get("error")
            rows.append(NewItem(type="function_call", call_id=item["id"], name=item["name"],
                                arguments=item["arguments"]))
            rows.append(NewItem(type="function_call_output", call_id=item["id"], output=str(result or "")))
    return rows


def _conversation_content(item: Item) -> list[dict[str, Any]]:
    """Conversations keep `annotations` on output_text parts but not the response-only `logprobs`."""
    return [{k: v for k, v in part.items() if k != "logprobs"} for part in item.get("content") or []]


def arguments_object(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as an object (the grammar makes them valid; anything else counts as none)."""
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return {}
    if isinstance(value, str):  # some models encode the object twice
        return arguments_object(value)
    return value if isinstance(value, dict) else {}
