"""Parsing and validating OpenAI chat completion requests into backend-neutral values.

Every rejection is a 400 naming the offending field in `param`, the way OpenAI's API does. Unknown fields are
ignored, so SDKs that send newer options keep working.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from server.core.errors import ApiError, invalid_request
from server.core.json_body import (
    optional_bool,
    optional_int,
    optional_number,
    optional_str,
    parse_metadata,
    parse_object,
)
from server.llm.backends.base import ChatMessage, SamplingParams
from server.llm.chat_tools import parse_tool_calls, parse_tool_fields, tool_call_object

ROLES = {"system", "developer", "user", "assistant", "tool"}
TEXT_PART_TYPES = {"text", "input_text", "output_text"}
# OpenAI's Chat Completions part `{type: "image_url", image_url: {url, detail?}}` and the Responses API's
# `{type: "input_image", image_url, detail?}`.
IMAGE_PART_TYPES = {"image_url", "input_image"}
IMAGE_DETAILS = ("auto", "low", "high")
MAX_STOP_SEQUENCES = 4
# The request fields a model's catalog entry may give defaults for (a cap on max_tokens is its token limit).
DEFAULT_PARAM_FIELDS = frozenset(
    {"temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty", "stop", "seed"}
)


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
    # `messages[i].content[j]` of the first image part, if any: what a model without vision is refused for.
    first_image_param: str | None = None


def requested_model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if model is None:
        raise invalid_request("Parameter 'model' is required", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid_request("Parameter 'model' must be a non-empty string", param="model")
    return model


def validate_default_params(raw: Any) -> dict[str, Any]:
    """A model's default sampling parameters as an admin sets them: the request fields they stand in for, each
    valid as in a request."""
    if not isinstance(raw, dict):
        raise invalid_request("'default_params' must be an object", param="default_params")
    unknown = sorted(set(raw) - DEFAULT_PARAM_FIELDS)
    if unknown:
        raise invalid_request(
            f"'default_params.{unknown[0]}' cannot have a default; allowed: {', '.join(sorted(DEFAULT_PARAM_FIELDS))}",
            param=f"default_params.{unknown[0]}",
        )
    try:
        _parse_sampling(raw)
    except ApiError as error:
        raise invalid_request(error.message, param=f"default_params.{error.param}") from None
    return raw


def parse_chat_request(body: bytes | dict[str, Any]) -> ChatCompletionRequest:
    payload = body if isinstance(body, dict) else parse_object(body)
    model = requested_model(payload)

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

    image_params = [
        f"messages[{i}].content[{j}]"
        for i, raw in enumerate(payload["messages"]) if isinstance(raw.get("content"), list)
        for j, part in enumerate(raw["content"]) if part.get("type") in IMAGE_PART_TYPES
    ]
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
        first_image_param=image_params[0] if image_params else None,
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
    content, images = _message_content(item.get("content"), f"{where}.content", role)
    tool_calls = parse_tool_calls(item.get("tool_calls"), f"{where}.tool_calls") if role == "assistant" else ()
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
        tool_calls=tool_calls,
        images=images,
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
        "content_parts": [_stored_part(p) for p in parts] if isinstance(parts, list) else None,
    }
    if message.tool_call_id is not None:
        stored["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        stored["tool_calls"] = [tool_call_object(call) for call in message.tool_calls]
    return stored


def _stored_part(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] in TEXT_PART_TYPES:
        return {"type": "text", "text": part["text"]}
    url, detail = _image_fields(part)
    return {"type": "image_url", "image_url": {"url": url, "detail": detail}}


def _message_content(content: Any, where: str, role: str) -> tuple[str, tuple[str, ...]]:
    """The text of a message (text parts joined by newlines) and the URLs of its image parts (user messages
    only, as in OpenAI's API)."""
    if isinstance(content, str):
        return content, ()
    if content is None:
        if role == "assistant":
            return "", ()
        raise invalid_request(f"'{where}' is required", param=where)
    if not isinstance(content, list):
        raise invalid_request(f"'{where}' must be a string or an array of content parts", param=where)
    texts, images = [], []
    for index, part in enumerate(content):
        part_where = f"{where}[{index}]"
        if not isinstance(part, dict):
            raise invalid_request(f"'{part_where}' must be an object", param=part_where)
        part_type = part.get("type")
        if part_type in IMAGE_PART_TYPES and role == "user":
            images.append(_image_fields(part, part_where)[0])
            continue
        if part_type not in TEXT_PART_TYPES:
            raise invalid_request(
                f"Content part type '{part_type}' is not supported in {role} messages; use text parts",
                param=f"{part_where}.type",
                code="unsupported_content_type",
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid_request(f"'{part_where}.text' must be a string", param=f"{part_where}.text")
        texts.append(text)
    return "\n".join(texts), tuple(images)


def _image_fields(part: dict[str, Any], where: str = "") -> tuple[str, str]:
    """The URL (or data URL) and detail of an image part in either form."""
    value = part.get("image_url")
    fields = value if isinstance(value, dict) else {"url": value, "detail": part.get("detail")}
    url, detail = fields.get("url"), fields.get("detail") or "auto"
    prefix = f"{where}.image_url." if isinstance(value, dict) else f"{where}."
    if not isinstance(url, str) or not url:
        param = prefix + "url" if isinstance(value, dict) else f"{where}.image_url"
        raise invalid_request(f"'{param}' must be a non-empty URL or data URL", param=param)
    if detail not in IMAGE_DETAILS:
        raise invalid_request(f"'{prefix}detail' must be one of {', '.join(IMAGE_DETAILS)}", param=prefix + "detail")
    return url, detail


def _parse_sampling(payload: dict[str, Any]) -> SamplingParams:
    max_tokens = optional_int(payload, "max_completion_tokens", minimum=1)
    if max_tokens is None:
        max_tokens = optional_int(payload, "max_tokens", minimum=1)
    json_schema, json_object = _parse_response_format(payload.get("response_format"))
    tools, tool_choice, parallel_tool_calls = parse_tool_fields(payload)
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
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel_tool_calls,
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
