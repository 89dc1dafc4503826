"""The KServe v2 tensors of Triton's vLLM backend, as the triton backend speaks them.

A request is one `ModelInferRequest` built with tritonclient's InferInput: the rendered prompt (`text_input`),
`stream`, vLLM's SamplingParams as JSON (`sampling_parameters`), and the flags that ask for the delta only and for
`finish_reason` and the token counts on every response. Each streamed response carries the new text (`text_output`),
`finish_reason` (the string "None" until the last one) and the tokens of that delta (`num_output_tokens`); Triton marks
the last response of a request with the `triton_final_response` parameter.

Responses are decoded straight from `raw_output_contents` (BYTES: a 4-byte little-endian length before each element;
UINT32: 4 little-endian bytes) rather than through numpy: it is the per-token hot path.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import tritonclient.grpc.aio as triton
from tritonclient.grpc import service_pb2

from server.llm.backends.base import SamplingParams

# vLLM reports these; "abort" (the engine dropped the request) is an error, not an answer.
FINISH_REASONS: dict[str, Literal["stop", "length"]] = {"stop": "stop", "length": "length"}
_UINT32 = struct.Struct("<I")


def _bytes_input(name: str, value: bytes) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "BYTES")
    tensor.set_data_from_numpy(np.array([value], dtype=np.object_))
    return tensor


def _bool_input(name: str, value: bool) -> triton.InferInput:
    tensor = triton.InferInput(name, [1], "BOOL")
    tensor.set_data_from_numpy(np.array([value], dtype=bool))
    return tensor


def sampling_parameters(params: SamplingParams, default_max_tokens: int, eos_token: str) -> dict[str, Any]:
    """vLLM's SamplingParams. Without max_tokens vLLM would stop after 16 tokens: we ask for the context size, and
    vLLM ends the answer at max_model_len anyway. The template's end-of-turn token is a stop string too, for models
    whose generation config does not list it as an end of sequence (vLLM never shows stop strings)."""
    sampling: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens if params.max_tokens is not None else default_max_tokens,
    }
    stop = list(params.stop)
    if eos_token and eos_token not in stop:
        stop.append(eos_token)
    if stop:
        sampling["stop"] = stop
    if params.seed is not None:
        sampling["seed"] = params.seed
    if params.presence_penalty:
        sampling["presence_penalty"] = params.presence_penalty
    if params.frequency_penalty:
        sampling["frequency_penalty"] = params.frequency_penalty
    return sampling


def infer_request(model: str, request_id: str, prompt: str, sampling: dict[str, Any]) -> dict[str, Any]:
    """One streaming request, in the form tritonclient's `stream_infer` takes from its inputs iterator."""
    inputs = [
        _bytes_input("text_input", prompt.encode()),
        _bool_input("stream", True),
        _bytes_input("sampling_parameters", json.dumps(sampling, separators=(",", ":")).encode()),
        _bool_input("exclude_input_in_output", True),
        _bool_input("return_finish_reason", True),
        _bool_input("return_num_input_tokens", True),
        _bool_input("return_num_output_tokens", True),
    ]
    return {"model_name": model, "inputs": inputs, "request_id": request_id}


@dataclass(frozen=True)
class StreamedPiece:
    text: str
    finish_reason: str | None  # None until the request's last response
    input_tokens: int | None
    output_tokens: int  # in this piece's text
    final: bool


def _first_bytes(raw: bytes) -> bytes:
    (length,) = _UINT32.unpack_from(raw)
    return raw[4 : 4 + length]


def decode_response(response: service_pb2.ModelInferResponse) -> StreamedPiece:
    text, finish, input_tokens, output_tokens = "", None, None, 0
    raw_contents = response.raw_output_contents
    for index, output in enumerate(response.outputs):
        if index >= len(raw_contents):
            break
        raw = raw_contents[index]
        if not raw:
            continue
        if output.name == "text_output":
            text = _first_bytes(raw).decode(errors="replace")
        elif output.name == "finish_reason":
            reason = _first_bytes(raw).decode(errors="replace")
            finish = None if reason in ("", "None") else reason
        elif output.name == "num_input_tokens":
            input_tokens = _UINT32.unpack_from(raw)[0]
        elif output.name == "num_output_tokens":
            output_tokens = _UINT32.unpack_from(raw)[0]
    final_flag = response.parameters.get("triton_final_response")
    final = bool(final_flag.bool_param) if final_flag is not None else False
    return StreamedPiece(text, finish, input_tokens, output_tokens, final or finish is not None)
