"""Reading JSON request bodies the way every endpoint does: one object, typed fields, a 400 naming the field.

Bodies are decoded here rather than by Envoy's transcoder so that both the original Jan Server's request forms and
OpenAI's are accepted, and so errors name the offending field in `param`. Like the original (Go's json.Decoder),
only the first JSON value is read: trailing bytes after one complete object are ignored.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from server.core.errors import ApiError, invalid_request

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_LENGTH = 64
MAX_METADATA_VALUE_LENGTH = 512
_DECODER = json.JSONDecoder()
_METADATA_KEY = re.compile(r"^[A-Za-z0-9_.:-]+$")


def parse_object(body: bytes) -> dict[str, Any]:
    """The first JSON value of `body`, which must be an object. An empty body is an empty object."""
    try:
        text = body.decode()
    except UnicodeDecodeError as error:
        raise invalid_request(f"Invalid JSON body: {error}", code="invalid_json") from None
    text = text.lstrip()
    if not text:
        return {}
    try:
        payload, _ = _DECODER.raw_decode(text)
    except json.JSONDecodeError as error:
        raise invalid_request(f"Invalid JSON body: {error}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise invalid_request("The request body must be a JSON object", code="invalid_json")
    return payload


def type_error(param: str, expected: str) -> ApiError:
    return invalid_request(f"'{param}' must be {expected}", param=param)


def optional_bool(payload: dict[str, Any], name: str, *, param: str | None = None) -> bool | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, bool):
        raise type_error(param or name, "a boolean")
    return value


def optional_str(
    payload: dict[str, Any], name: str, *, param: str | None = None, max_length: int | None = None
) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise type_error(param or name, "a string")
    if max_length is not None and len(value) > max_length:
        raise invalid_request(f"'{param or name}' must be at most {max_length} characters", param=param or name)
    return value


def optional_int(
    payload: dict[str, Any], name: str, *, minimum: int | None = None, maximum: int | None = None,
    param: str | None = None,
) -> int | None:
    param = param or name
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(param, "an integer")
    if minimum is not None and value < minimum:
        raise invalid_request(f"'{param}' must be at least {minimum}", param=param)
    if maximum is not None and value > maximum:
        raise invalid_request(f"'{param}' must be at most {maximum}", param=param)
    return value


def optional_number(payload: dict[str, Any], name: str, low: float, high: float, *, default: float) -> float:
    value = payload.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise type_error(name, "a number")
    if not low <= value <= high:
        raise invalid_request(f"'{name}' must be between {low:g} and {high:g}", param=name)
    return float(value)


def parse_metadata(raw: Any, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata: at most 16 string pairs, keys ≤ 64 characters, values ≤ 512."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise invalid_request(f"'{param}' must be an object of string values", param=param)
    if len(raw) > MAX_METADATA_KEYS:
        raise invalid_request(f"'{param}' takes at most {MAX_METADATA_KEYS} keys", param=param)
    for key, value in raw.items():
        if not key or len(key) > MAX_METADATA_KEY_LENGTH or not _METADATA_KEY.match(key):
            raise invalid_request(
                f"'{param}' keys must be 1-{MAX_METADATA_KEY_LENGTH} characters of letters, digits, _ . : -",
                param=f"{param}.{key}",
            )
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise invalid_request(
                f"'{param}.{key}' must be at most {MAX_METADATA_VALUE_LENGTH} characters", param=f"{param}.{key}"
            )
    return dict(raw)
