"""OpenAI's `POST /v1/embeddings`: validate the request, embed, answer in OpenAI's shape.

`{object: "list", data: [{object: "embedding", index, embedding}], model, usage: {prompt_tokens, total_tokens}}`,
where `embedding` is a list of floats (rounded to 9 decimal places) or, with `encoding_format: "base64"`, the exact
base64 of little-endian float32 (what the openai SDK asks for and decodes). Texts longer than the model's 256
tokens are truncated, as sentence-transformers does; `usage` counts the tokens actually read.

The body is produced in pieces: 2048 vectors as JSON are about 10 MB, above the gRPC message and transcoder
buffer limits, and encoding them in one go would hold the event loop for a quarter of a second.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np

from server.core.errors import ApiError, invalid_request
from server.core.json_body import optional_int, optional_str, parse_object
from server.llm.embeddings.base import Embedder

# OpenAI's limit on inputs per request.
MAX_INPUTS = 2048
# Embeddings per piece of the response body: about 0.3 MB of JSON floats.
_PIECE = 64
_FLOAT_DECIMALS = 9


def _texts(raw: Any) -> list[str]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise invalid_request("'input' must be a string or an array of strings", param="input")
    if not raw:
        raise invalid_request("'input' must not be empty", param="input")
    if len(raw) > MAX_INPUTS:
        raise invalid_request(f"'input' takes at most {MAX_INPUTS} texts", param="input")
    for index, text in enumerate(raw):
        if isinstance(text, int | list) and not isinstance(text, bool):
            raise invalid_request(
                "Token arrays are not supported as 'input': send text", param="input", code="unsupported_value"
            )
        if not isinstance(text, str):
            raise invalid_request("'input' must be a string or an array of strings", param=f"input[{index}]")
        if not text:
            raise invalid_request("'input' must not contain empty strings", param=f"input[{index}]")
    return raw


def _encode(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    # 9 decimal places are within 5e-10 of the float32 value, and about half the JSON (and encoding time) of
    # the 17 significant digits a float64 repr of it would print.
    return np.round(vector.astype(np.float64), _FLOAT_DECIMALS).tolist()


class EmbeddingsApi:
    """`is_chat_model` tells a chat model's id (refused with a 400 saying so) from one that does not exist."""

    def __init__(self, embedder: Embedder, is_chat_model: Callable[[str], bool] = lambda model: False) -> None:
        self._embedder = embedder
        self._is_chat_model = is_chat_model

    async def create(self, body: bytes) -> AsyncIterator[bytes]:
        """The JSON response body, in pieces, for a request body. Raises ApiError, for what the caller must fix,
        before the first piece."""
        payload = parse_object(body)
        model = optional_str(payload, "model")
        if not model:
            raise invalid_request("'model' is required", param="model", code="missing_required_parameter")
        if model != self._embedder.model_id and self._is_chat_model(model):
            raise invalid_request(
                f"The model '{model}' is a chat model and cannot create embeddings; use '{self._embedder.model_id}'",
                param="model", code="model_not_embedding",
            )
        if model != self._embedder.model_id:
            raise ApiError(
                404,
                f"The embedding model '{model}' does not exist; use '{self._embedder.model_id}'",
                code="model_not_found",
                param="model",
            )
        if "input" not in payload:
            raise invalid_request("'input' is required", param="input", code="missing_required_parameter")
        texts = _texts(payload["input"])
        encoding_format = optional_str(payload, "encoding_format") or "float"
        if encoding_format not in ("float", "base64"):
            raise invalid_request("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
        dimensions = optional_int(payload, "dimensions")
        if dimensions is not None and dimensions != self._embedder.dimensions:
            raise invalid_request(
                f"'dimensions' must be {self._embedder.dimensions}: this model cannot shorten its vectors",
                param="dimensions",
            )
        optional_str(payload, "user")

        embedded = await self._embedder.embed_with_token_counts(texts)
        yield b'{"object":"list","data":['
        for start in range(0, len(texts), _PIECE):
            items = (
                {"object": "embedding", "index": index, "embedding": _encode(embedded.vectors[index], encoding_format)}
                for index in range(start, min(start + _PIECE, len(texts)))
            )
            yield (b"," if start else b"") + ",".join(_json(item) for item in items).encode()
        tokens = sum(embedded.token_counts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        yield f"],\"model\":{_json(self._embedder.model_id)},\"usage\":{_json(usage)}}}".encode()


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
