"""Conversation items as clients send them, validated and normalized to OpenAI's item shapes.

Accepted forms of a message: OpenAI's `{type: "message", role, content}`, its easy form without `type`, content as
a string or a list of parts, and the original Jan Server's parts `{"type": "text", "text": {"text": …}}` and
`{"type": "input_text", "input_text": …}`. Text is stored as the part its role would produce in OpenAI's API:
`input_text` for user, system and developer messages, `output_text` (with `annotations`) for assistant ones.
Every error is a 400 whose `param` names the field, e.g. `items[0].content[1].text`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from server.core.errors import invalid_request
from server.core.json_body import type_error

MAX_ITEMS = 20
MAX_PARTS = 100
MAX_TEXT_CHARS = 100_000
MAX_CALL_FIELD_CHARS = 128  # call_id and name columns
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
ITEM_STATUSES = ("completed", "in_progress", "incomplete")
IMAGE_DETAILS = ("auto", "low", "high")
ITEM_ID = re.compile(r"^msg_[a-z0-9]{1,60}$")

Part = dict[str, Any]


@dataclass(frozen=True)
class NewItem:
    """A validated item, ready to store. `id` is the client's own `msg_…` id, if it gave one."""

    type: str
    status: str = "completed"
    id: str | None = None
    role: str | None = None
    content: list[Part] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None


def parse_items(raw: Any, param: str = "items") -> list[NewItem]:
    """1 to 20 items. Client-supplied ids must be well formed and distinct (whether they are free is the
    store's question)."""
    if not isinstance(raw, list):
        raise type_error(param, "an array of items")
    if not raw:
        raise invalid_request(f"'{param}' must hold at least one item", param=param)
    if len(raw) > MAX_ITEMS:
        raise invalid_request(f"'{param}' takes at most {MAX_ITEMS} items, got {len(raw)}", param=param)
    items = [parse_item(entry, f"{param}[{index}]") for index, entry in enumerate(raw)]
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item.id is not None:
            if item.id in seen:
                raise invalid_request(f"Item id '{item.id}' appears twice", param=f"{param}[{index}].id")
            seen.add(item.id)
    return items


def parse_item(raw: Any, param: str) -> NewItem:
    if not isinstance(raw, dict):
        raise type_error(param, "an object")
    item_type = raw.get("type")
    if item_type is None and "role" in raw:
        item_type = "message"  # OpenAI's easy input message: {role, content}
    item_id = _item_id(raw.get("id"), f"{param}.id")
    status = _status(raw.get("status"), f"{param}.status")
    if item_type == "message":
        role = _role(raw.get("role"), f"{param}.role")
        content = parse_content(role, raw.get("content"), f"{param}.content")
        return NewItem(type="message", status=status, id=item_id, role=role, content=content)
    if item_type == "function_call":
        return NewItem(
            type="function_call",
            status=status,
            id=item_id,
            call_id=_short_text(raw, "call_id", param),
            name=_short_text(raw, "name", param),
            arguments=_required_str(raw, "arguments", param),
        )
    if item_type == "function_call_output":
        return NewItem(
            type="function_call_output",
            status=status,
            id=item_id,
            call_id=_short_text(raw, "call_id", param),
            output=_required_str(raw, "output", param),
        )
    if item_type is None:
        raise invalid_request(f"'{param}.type' is required", param=f"{param}.type")
    raise invalid_request(
        f"'{param}.type' must be 'message', 'function_call' or 'function_call_output', got {item_type!r}",
        param=f"{param}.type",
    )


def parse_content(role: str, raw: Any, param: str) -> list[Part]:
    """A message's content, a string or 1 to 100 parts, as OpenAI content parts for `role`."""
    if isinstance(raw, str):
        return [_text_part(role, _text(raw, param))]
    if raw is None:
        raise invalid_request(f"'{param}' is required", param=param)
    if not isinstance(raw, list):
        raise type_error(param, "a string or an array of content parts")
    if not raw:
        raise invalid_request(f"'{param}' must hold at least one part", param=param)
    if len(raw) > MAX_PARTS:
        raise invalid_request(f"'{param}' takes at most {MAX_PARTS} parts, got {len(raw)}", param=param)
    return [_part(role, part, f"{param}[{index}]") for index, part in enumerate(raw)]


def message_text(content: list[Part]) -> str:
    """The text parts of normalized content, joined: what a title or a prompt reads."""
    return "\n".join(part["text"] for part in content if part["type"] in ("input_text", "output_text"))


def first_user_text(items: list[NewItem]) -> str | None:
    for item in items:
        if item.type == "message" and item.role == "user" and item.content is not None:
            return message_text(item.content)
    return None


def _part(role: str, raw: Any, param: str) -> Part:
    if not isinstance(raw, dict):
        raise type_error(param, "a content part object")
    part_type = raw.get("type")
    if part_type in ("input_text", "output_text", "text"):
        return _text_part(role, _part_text(raw, part_type, param), raw.get("annotations"))
    if part_type == "refusal":
        if role != "assistant":
            raise invalid_request("A 'refusal' part belongs to an assistant message", param=f"{param}.type")
        return {"type": "refusal", "refusal": _text(raw.get("refusal"), f"{param}.refusal")}
    if part_type in ("input_image", "image", "image_url"):
        return _image_part(raw, part_type, param)
    if part_type is None:
        raise invalid_request(f"'{param}.type' is required", param=f"{param}.type")
    raise invalid_request(
        f"'{param}.type' must be one of input_text, output_text, text, refusal, input_image; got {part_type!r}",
        param=f"{param}.type",
    )


def _part_text(raw: Part, part_type: str, param: str) -> str:
    """The text of a text part in any accepted form: OpenAI's `text` string, or the original's `text: {text}`,
    `input_text: "…"` and `output_text: {text}`."""
    if "text" not in raw and part_type in raw:
        param, value = f"{param}.{part_type}", raw[part_type]
    else:
        param, value = f"{param}.text", raw.get("text")
    if isinstance(value, dict):
        param, value = f"{param}.text", value.get("text")
    return _text(value, param)


def _text_part(role: str, text: str, annotations: Any = None) -> Part:
    if role != "assistant":
        return {"type": "input_text", "text": text}
    kept = annotations if isinstance(annotations, list) and all(isinstance(a, dict) for a in annotations) else []
    return {"type": "output_text", "text": text, "annotations": kept}


def _image_part(raw: Part, part_type: str, param: str) -> Part:
    """OpenAI's `input_image` (`image_url` string or `file_id`), the original's `image: {url, file_id, detail}`
    and Chat Completions' `image_url: {url, detail}`."""
    fields = raw
    if part_type != "input_image":
        nested = raw.get(part_type)
        if not isinstance(nested, dict):
            raise type_error(f"{param}.{part_type}", "an object")
        fields = {"image_url": nested.get("url"), "file_id": nested.get("file_id"), "detail": nested.get("detail")}
        param = f"{param}.{part_type}"
    part: Part = {"type": "input_image"}
    for name in ("image_url", "file_id"):
        value = fields.get(name)
        if value is not None:
            if not isinstance(value, str) or not value:
                raise type_error(f"{param}.{name}", "a non-empty string")
            part[name] = value
    if len(part) == 1:
        raise invalid_request(f"'{param}' needs an 'image_url' or a 'file_id'", param=f"{param}.image_url")
    detail = fields.get("detail") or "auto"
    if detail not in IMAGE_DETAILS:
        raise invalid_request(f"'{param}.detail' must be one of {', '.join(IMAGE_DETAILS)}", param=f"{param}.detail")
    part["detail"] = detail
    return part


def _text(value: Any, param: str) -> str:
    if value is None:
        raise invalid_request(f"'{param}' is required", param=param)
    if not isinstance(value, str):
        raise type_error(param, "a string")
    if len(value) > MAX_TEXT_CHARS:
        raise invalid_request(f"'{param}' must be at most {MAX_TEXT_CHARS} characters", param=param)
    return value


def _role(value: Any, param: str) -> str:
    if value is None:
        raise invalid_request(f"'{param}' is required", param=param)
    if value not in MESSAGE_ROLES:
        raise invalid_request(f"'{param}' must be one of {', '.join(MESSAGE_ROLES)}; got {value!r}", param=param)
    return str(value)


def _status(value: Any, param: str) -> str:
    if value is None:
        return "completed"
    if value not in ITEM_STATUSES:
        raise invalid_request(f"'{param}' must be one of {', '.join(ITEM_STATUSES)}", param=param)
    return str(value)


def _item_id(value: Any, param: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not ITEM_ID.match(value):
        raise invalid_request(f"'{param}' must look like msg_ followed by lowercase letters and digits", param=param)
    return value


def _required_str(raw: Part, name: str, param: str) -> str:
    value = raw.get(name)
    if value is None:
        raise invalid_request(f"'{param}.{name}' is required", param=f"{param}.{name}")
    if not isinstance(value, str):
        raise type_error(f"{param}.{name}", "a string")
    return value


def _short_text(raw: Part, name: str, param: str) -> str:
    value = _required_str(raw, name, param)
    if not value or len(value) > MAX_CALL_FIELD_CHARS:
        raise invalid_request(
            f"'{param}.{name}' must be 1-{MAX_CALL_FIELD_CHARS} characters", param=f"{param}.{name}"
        )
    return value
