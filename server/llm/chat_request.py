"""Parsing and validating OpenAI chat completion requests into backend-neutral values.

Every rejection is a 400 naming the offending field in `param`, the way OpenAI's API does. Unknown fields are
ignored, so SDKs that send newer options keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.core.errors import invalid_request
from server.core.json_body import (
    optional_bool,
    optional_int,
    optional_number,
    optional_str,
    parse_metadata,
    parse_object,
)
from server.llm.backends.base import ChatMessage, SamplingParams

ROLES = {"system", "developer", "user", "assistant", "tool"}
TEXT_PART_TYPES = {"text", "input_text", "output_text"}
MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class ChatCompletionRequest:
    model: str
    messages: list[ChatMessage]
    sampling: SamplingParams
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Jan's extensions: a stored conversation to continue, and whether to append this turn to it.
    conversation_id: str | None = None
    store: bool = True
    # OpenAI's `"store": true` (explicit only; absent means not stored): keep the finished completion, with the
    # request's messages in OpenAI's stored-message shape (ids are assigned when stored).
    store_completion: bool = False
    stored_messages: list[dict[str, Any]] = field(default_factory=list)


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    payload = parse_object(body)
    model = payload.get("model")
    if model is None:
        raise invalid_request("Parameter 'model' is required", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid_request("Parameter 'model' must be a non-empty string", param="model")

    messages = _parse_messages(payload.get("messages"))
    store = optional_bool(payload, "store")

    n = optional_int(payload, "n", minimum=1)
    if n not in (None, 1):
        raise invalid_request("Only n=1 is supported", param="n", code="unsupported_value")

    stream = optional_bool(payload, "stream") or False
    include_usage = False
    stream_options = payload.get("stream_options")
    if stream_options is not None:
        if not stream:
            raise invalid_request(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled", param="stream_options"
            )
        if not isinstance(stream_options, dict):
            raise invalid_request("'stream_options' must be an object", param="stream_options")
        include_usage = optional_bool(stream_options, "include_usage", param="stream_options.include_usage") or False

    return ChatCompletionRequest(
        model=model,
        messages=messages,
        sampling=_parse_sampling(payload),
        stream=stream,
        include_usage=include_usage,
        user=optional_str(payload, "user"),
        metadata=parse_metadata(payload.get("metadata")),
        conversation_id=_parse_conversation(payload.get("conversation")),
        store=store is not False,
        store_completion=store is True,
        stored_messages=_stored_messages(payload["messages"], messages) if store else [],
    )


def _parse_conversation(raw: Any) -> str | None:
    """A conversation id, as a string or as OpenAI's `{"id": ...}` object."""
    if isinstance(raw, dict):
        raw = raw.get("id")
        if not isinstance(raw, str):
            raise invalid_request("'conversation.id' must be a string", param="conversation.id")
    if raw is not None and not isinstance(raw, str):
        raise invalid_request("'conversation' must be a conversation id or an object with an 'id'",
                              param="conversation")
    return raw or None


def _parse_messages(raw: Any) -> list[ChatMessage]:
    if raw is None:
        raise invalid_request("Parameter 'messages' is required", param="messages", code="missing_required_parameter")
    if not isinstance(raw, list):
        raise invalid_request("Parameter 'messages' must be an array", param="messages")
    if not raw:
        raise invalid_request("Parameter 'messages' must not be empty", param="messages")
    return [_parse_message(item, f"messages[{index}]") for index, item in enumerate(raw)]


def _parse_message(item: Any, where: str) -> ChatMessage:
    if not isinstance(item, dict):
        raise invalid_request(f"'{where}' must be an object", param=where)
    role = item.get("role")
    if role not in ROLES:
        raise invalid_request(
            f"'{where}.role' must be one of {', '.join(sorted(ROLES))}", param=f"{where}.role"
        )
    content = _message_text(item.get("content"), f"{where}.content", allow_null=role == "assistant")
    tool_call_id = item.get("tool_call_id")
    if role == "tool" and not isinstance(tool_call_id, str):
        raise invalid_request(f"'{where}.tool_call_id' is required for tool messages", param=f"{where}.tool_call_id")
    name = item.get("name")
    if name is not None and not isinstance(name, str):
        raise invalid_request(f"'{where}.name' must be a string", param=f"{where}.name")
    return ChatMessage(
        role="system" if role == "developer" else role,
        content=content,
        name=name,
        tool_call_id=tool_call_id if role == "tool" else None,
    )


def _stored_messages(raw_messages: list[dict[str, Any]], messages: list[ChatMessage]) -> list[dict[str, Any]]:
    return [_stored_message(raw, message) for raw, message in zip(raw_messages, messages, strict=True)]


def _stored_message(raw: dict[str, Any], message: ChatMessage) -> dict[str, Any]:
    """A request message as OpenAI lists a stored completion's messages: the role as sent, the text, and the text
    parts when the content was an array."""
    parts = raw.get("content")
    stored: dict[str, Any] = {
        "role": raw["role"],
        "content": message.content if raw.get("content") is not None else None,
        "name": message.name,
        "content_parts": [{"type": "text", "text": p["text"]} for p in parts] if isinstance(parts, list) else None,
    }
    if message.tool_call_id is not None:
        stored["tool_call_id"] = message.tool_call_id
    return stored


def _message_text(content: Any, where: str, *, allow_null: bool) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        if allow_null:
            return ""
        raise invalid_request(f"'{where}' is required", param=where)
    if not isinstance(content, list):
        raise invalid_request(f"'{where}' must be a string or an array of content parts", param=where)
    texts = []
    for index, part in enumerate(content):
        part_where = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise invalid_request(f"'{part_where}' must be an object", param=part_where)
        part_type = part.get("type")
        if part_type not in TEXT_PART_TYPES:
            raise invalid_request(
                f"Content part type '{part_type}' is not supported by this model; use text parts",
                param=f"{part_where}.type",
                code="unsupported_content_type",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid_request(f"'{part_where}.text' must be a string", param=f"{part_where}.text")
        texts.append(text)
    return "\n".join(texts)


def _parse_sampling(payload: dict[str, Any]) -> SamplingParams:
    max_tokens = optional_int(payload, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = optional_int(payload, "max_tokens", minimum=1)
    json_schema, json_object = _parse_response_format(payload.get("response_format"))
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=optional_number(payload, "temperature", 0.0, 2.0, default=1.0),
        top_p=optional_number(payload, "top_p", 0.0, 1.0, default=1.0),
        stop=_parse_stop(payload.get("stop")),
        seed=optional_int(payload, "seed"),
        presence_penalty=optional_number(payload, "presence_penalty", -2.0, 2.0, default=0.0),
        frequency_penalty=optional_number(payload, "frequency_penalty", -2.0, 2.0, default=0.0),
        json_schema=json_schema,
        json_object=json_object,
    )


def _parse_response_format(raw: Any) -> tuple[dict[str, Any] | None, bool]:
    """OpenAI's `json_schema` form is translated here: llama-cpp-python would silently ignore it."""
    if raw is None:
        return None, False
    if not isinstance(raw, dict):
        raise invalid_request("'response_format' must be an object", param="response_format")
    kind = raw.get("type")
    if kind == "text":
        return None, False
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        spec = raw.get("json_schema")
        if not isinstance(spec, dict):
            raise invalid_request(
                "'response_format.json_schema' must be an object", param="response_format.json_schema"
            )
        schema = spec.get("schema")
        if not isinstance(schema, dict):
            raise invalid_request(
                "'response_format.json_schema.schema' must be a JSON schema object",
                param="response_format.json_schema.schema",
            )
        return schema, False
    raise invalid_request(
        "'response_format.type' must be one of text, json_object, json_schema", param="response_format.type"
    )


def _parse_stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise invalid_request("'stop' must be a string or an array of strings", param="stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise invalid_request(f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences", param="stop")
    return tuple(s for s in stops if s)
