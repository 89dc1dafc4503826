"""The triton backend's tensors: vLLM sampling parameters from ours, and streamed responses decoded as the vLLM
backend sends them (finish_reason "None" until the end, Triton's final flag), plus the settings it needs."""

from __future__ import annotations

import struct

import pytest
from pydantic import ValidationError
from tritonclient.grpc import service_pb2

from server.core.config import ModelSettings
from server.llm.backends.base import SamplingParams
from server.llm.backends.triton_wire import decode_response, infer_request, sampling_parameters


def test_sampling_parameters_send_only_what_differs_and_stop_at_the_end_of_turn() -> None:
    assert sampling_parameters(SamplingParams(), 4096, "<|im_end|>") == {
        "temperature": 1.0, "top_p": 1.0, "max_tokens": 4096, "stop": ["<|im_end|>"],
    }
    params = SamplingParams(max_tokens=5, temperature=0, top_p=0.5, stop=("x", "<|im_end|>"), seed=7,
                            presence_penalty=0.1, frequency_penalty=-0.2)
    assert sampling_parameters(params, 4096, "<|im_end|>") == {
        "temperature": 0, "top_p": 0.5, "max_tokens": 5, "stop": ["x", "<|im_end|>"], "seed": 7,
        "presence_penalty": 0.1, "frequency_penalty": -0.2,
    }
    assert "stop" not in sampling_parameters(SamplingParams(), 10, "")


def test_the_request_carries_the_vllm_backends_inputs() -> None:
    request = infer_request("m", "r1", "prompt", {"max_tokens": 3})
    assert request["model_name"] == "m" and request["request_id"] == "r1"
    assert [tensor.name() for tensor in request["inputs"]] == [
        "text_input", "stream", "sampling_parameters", "exclude_input_in_output", "return_finish_reason",
        "return_num_input_tokens", "return_num_output_tokens",
    ]


def _response(text: str, finish: str, final: bool | None, input_tokens: int = 9,
              output_tokens: int = 1) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(model_name="m", id="r1")
    for name, datatype, raw in [
        ("text_output", "BYTES", struct.pack("<I", len(text.encode())) + text.encode()),
        ("finish_reason", "BYTES", struct.pack("<I", len(finish)) + finish.encode()),
        ("num_input_tokens", "UINT32", struct.pack("<I", input_tokens)),
        ("num_output_tokens", "UINT32", struct.pack("<I", output_tokens)),
    ]:
        response.outputs.add(name=name, datatype=datatype, shape=[1])
        response.raw_output_contents.append(raw)
    if final is not None:
        response.parameters["triton_final_response"].bool_param = final
    return response


def test_streamed_responses_decode_to_text_counts_and_the_end() -> None:
    middle = decode_response(_response("héllo", "None", False))
    assert (middle.text, middle.finish_reason, middle.input_tokens, middle.output_tokens, middle.final) == (
        "héllo", None, 9, 1, False)
    last = decode_response(_response("", "length", True, output_tokens=0))
    assert (last.finish_reason, last.final) == ("length", True)
    # Without Triton's flag (an older server), the finish reason alone ends the answer.
    assert decode_response(_response("x", "stop", None)).final


def test_a_triton_model_needs_a_grpc_address_and_offers_no_tools_by_default() -> None:
    with pytest.raises(ValidationError, match="triton_url"):
        ModelSettings(id="m", backend="triton")
    with pytest.raises(ValidationError, match="triton_url"):
        ModelSettings(id="m", backend="triton", triton_url="http://gpu:8001")
    settings = ModelSettings(id="m", backend="triton", triton_url="gpu-1:8001")
    assert settings.tools is False
    assert settings.triton_template_path == "triton_models/m/tokenizer_config.json"
    named = ModelSettings(id="m", backend="triton", triton_url="gpu-1:8001", upstream_model="qwen", tools=True)
    assert named.tools is True and named.triton_template_path == "triton_models/qwen/tokenizer_config.json"
