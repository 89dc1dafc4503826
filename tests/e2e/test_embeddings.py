"""`POST /v1/embeddings` through Envoy with the `openai` SDK and raw HTTP, and a stack whose embedding model is gone."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.e2e.conftest import MODEL, assert_error_envelope, guest_login
from tests.support.stack import Stack, make_stack

EMBEDDING_MODEL = "all-minilm-l6-v2"
SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]


def test_sdk_float_and_base64_give_the_same_unit_vectors(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES, encoding_format="float")
    # The SDK asks for base64 when no format is given, and decodes it into floats itself.
    decoded = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES)
    assert floats.object == "list" and floats.model == EMBEDDING_MODEL
    assert [item.index for item in floats.data] == [0, 1, 2]
    assert all(item.object == "embedding" and len(item.embedding) == 384 for item in floats.data)
    vectors = np.array([item.embedding for item in floats.data])
    # floats are rounded to 9 decimal places; base64 is the exact float32
    np.testing.assert_allclose(vectors, np.array([item.embedding for item in decoded.data]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # sentence-transformers' published similarities for these sentences
    np.testing.assert_allclose(vectors @ vectors.T, [[1, 0.666, 0.1046], [0.666, 1, 0.1411], [0.1046, 0.1411, 1]],
                               atol=5e-4)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens == decoded.usage.prompt_tokens > 3 * 2


def test_sdk_string_input_and_dimensions(client: openai.OpenAI) -> None:
    one = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES[0], dimensions=384)
    listed = client.embeddings.create(model=EMBEDDING_MODEL, input=SENTENCES, encoding_format="float")
    assert len(one.data) == 1 and one.data[0].index == 0
    np.testing.assert_allclose(one.data[0].embedding, listed.data[0].embedding, atol=2e-6)
    assert one.usage.prompt_tokens == 8  # [CLS] the weather is lovely today . [SEP]


def test_raw_base64_is_little_endian_float32(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    body = {"model": EMBEDDING_MODEL, "input": ["hello", "world"], "encoding_format": "base64"}
    response = http.post("/llm/v1/embeddings", json=body, headers=auth_headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert set(answer) == {"object", "data", "model", "usage"}
    assert answer["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    vector = np.frombuffer(base64.b64decode(answer["data"][1]["embedding"]), dtype="<f4")
    floats = http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "world"}, headers=auth_headers)
    np.testing.assert_allclose(vector, floats.json()["data"][0]["embedding"], atol=2e-6)


def test_the_largest_request_arrives_whole(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    # 2048 float vectors are about 10 MB of JSON: more than one gRPC message, so it is sent in pieces.
    texts = [f"note {i}" for i in range(2048)]
    response = http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": texts}, headers=auth_headers)
    assert response.status_code == 200, response.text[:500]
    data = response.json()["data"]
    assert [item["index"] for item in data] == list(range(2048))
    assert all(len(item["embedding"]) == 384 for item in data)


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": EMBEDDING_MODEL, "input": ""}, 400, "invalid_parameter", "input[0]"),
        ({"model": EMBEDDING_MODEL, "input": []}, 400, "invalid_parameter", "input"),
        ({"model": EMBEDDING_MODEL, "input": ["fine", ""]}, 400, "invalid_parameter", "input[1]"),
        ({"model": EMBEDDING_MODEL, "input": [[101, 7592, 102]]}, 400, "unsupported_value", "input"),
        ({"model": EMBEDDING_MODEL, "input": [7592, 102]}, 400, "unsupported_value", "input"),
        ({"model": EMBEDDING_MODEL, "input": {"text": "x"}}, 400, "invalid_parameter", "input"),
        ({"model": EMBEDDING_MODEL, "input": ["x"] * 2049}, 400, "invalid_parameter", "input"),
        ({"model": EMBEDDING_MODEL}, 400, "missing_required_parameter", "input"),
        ({"input": "x"}, 400, "missing_required_parameter", "model"),
        ({"model": EMBEDDING_MODEL, "input": "x", "dimensions": 128}, 400, "invalid_parameter", "dimensions"),
        ({"model": EMBEDDING_MODEL, "input": "x", "encoding_format": "int8"}, 400, "invalid_parameter",
         "encoding_format"),
        ({"model": MODEL, "input": "x"}, 400, "model_not_embedding", "model"),
        ({"model": "no-such-model", "input": "x"}, 404, "model_not_found", "model"),
    ],
)
def test_bad_requests_get_openai_errors(
    http: httpx.Client, auth_headers: dict[str, str], body: dict[str, object], status: int, code: str, param: str
) -> None:
    response = http.post("/v1/embeddings", json=body, headers=auth_headers)
    error_type = "not_found_error" if status == 404 else "invalid_request_error"
    assert_error_envelope(response, status, type=error_type, code=code, param=param)


def test_sdk_errors_and_credentials(client: openai.OpenAI, http: httpx.Client, auth_headers: dict[str, str]) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert raised.value.code == "model_not_found" and EMBEDDING_MODEL in raised.value.message
    response = http.post("/v1/embeddings", content=b"{not json", headers=auth_headers)
    assert_error_envelope(response, 400, type="invalid_request_error", code="invalid_json")
    response = http.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "x"})
    assert_error_envelope(response, 401, type="auth_error")


@pytest.fixture(scope="module")
def stack_without_embeddings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = make_stack(embedding_model_dir=str(tmp_path_factory.mktemp("no-model")))
    stack.start()
    yield stack
    stack.stop()


def test_a_missing_embedding_model_is_503_and_the_rest_serves(stack_without_embeddings: Stack) -> None:
    token = guest_login(stack_without_embeddings)["access_token"]
    with openai.OpenAI(base_url=f"{stack_without_embeddings.base_url}/v1", api_key=token, max_retries=0) as sdk:
        with pytest.raises(openai.InternalServerError) as raised:
            sdk.embeddings.create(model=EMBEDDING_MODEL, input="x")
        assert raised.value.status_code == 503 and raised.value.code == "service_unavailable"
        assert "config.json does not exist" in raised.value.message
        assert [model.id for model in sdk.models.list()] == [MODEL]
        assert sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
