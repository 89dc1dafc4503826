"""What models a provider serves: its OpenAI-compatible `GET {base_url}/models`, and the ids Jan gives them.

Provider addresses are set by admins and usually point inside the deployment (a vLLM on the GPU box), so they are
not held to the SSRF guard that users' URLs are; the answer is bounded in time and size.
"""

from __future__ import annotations

import json
import re

import httpx

from server.core.errors import ApiError

MAX_MODELS_BYTES = 8 * 1024 * 1024
_SLUG = re.compile(r"[^a-z0-9._:-]+")


def provider_unreachable(message: str) -> ApiError:
    return ApiError(502, message, code="provider_unreachable")


def public_model_ids(vendor: str, upstream_models: list[str]) -> dict[str, str]:
    """upstream name -> public id: `<vendor>/<name>` in lowercase, as the original Jan names them. The name is its
    last path segment (`Qwen/Qwen2.5-0.5B-Instruct` -> `vllm/qwen2.5-0.5b-instruct`, `models/gemini-pro` ->
    `google/gemini-pro`) unless two of the provider's models share it; those keep their whole path."""

    def slug(text: str) -> str:
        return _SLUG.sub("-", text.lower()).strip("-")

    last_segments = [slug(name.rsplit("/", 1)[-1]) for name in upstream_models]
    ids = {}
    for name, last in zip(upstream_models, last_segments, strict=True):
        unique = last_segments.count(last) == 1
        path = last if unique else "/".join(slug(part) for part in name.removeprefix("models/").split("/"))
        ids[name] = f"{vendor}/{path}"
    return ids


async def fetch_model_names(base_url: str, api_key: str, timeout_seconds: float) -> list[str]:
    """The `id`s of the provider's `GET /models`; 502 `provider_unreachable` saying what went wrong."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/models"
    try:
        async with httpx.AsyncClient(timeout=timeout_seconds) as client, client.stream(
            "GET", url, headers=headers
        ) as response:
            raw = b""
            async for piece in response.aiter_bytes():
                raw += piece
                if len(raw) > MAX_MODELS_BYTES:
                    raise provider_unreachable(f"{url} answered more than {MAX_MODELS_BYTES} bytes")
    except httpx.HTTPError as error:
        raise provider_unreachable(f"Could not list the provider's models at {url}: {error.__class__.__name__}") \
            from error
    if response.status_code != 200:
        raise provider_unreachable(f"Listing the provider's models at {url} answered HTTP {response.status_code}")
    try:
        payload = json.loads(raw)
        names = [entry["id"] for entry in payload["data"]]
    except (ValueError, KeyError, TypeError) as error:
        raise provider_unreachable(f"{url} did not answer an OpenAI model list ({{\"data\": [{{\"id\"}}]}})") \
            from error
    if not all(isinstance(name, str) and name for name in names):
        raise provider_unreachable(f"{url} listed a model without a string id")
    return list(dict.fromkeys(names))
