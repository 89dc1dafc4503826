"""Bad input and failures: always the OpenAI envelope with the right status, never a 500 or a hang."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, assert_error_envelope

HELLO = [{"role": "user", "content": "Say hello."}]


def _post_chat(http: httpx.Client, headers: dict[str, str], **kwargs: object) -> httpx.Response:
    return http.post("/v1/chat/completions", headers={**headers, "Content-Type": "application/json"}, **kwargs)


def test_invalid_json_is_400(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    response = _post_chat(http, auth_headers, content=b'{"model": "x", "messages": [')
    assert_error_envelope(response, 400, type="invalid_request_error", code="invalid_json")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": HELLO, "n": 2}, "n"),
        ({"model": MODEL, "messages": HELLO, "temperature": "hot"}, "temperature"),
        ({"model": MODEL, "messages": HELLO, "temperature": 3}, "temperature"),
        ({"model": MODEL, "messages": HELLO, "max_tokens": "10"}, "max_tokens"),
        ({"model": MODEL, "messages": HELLO, "stream": "yes"}, "stream"),
        ({"model": MODEL, "messages": HELLO, "stop": 5}, "stop"),
        ({"model": MODEL, "messages": "hi"}, "messages"),
        ({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": 5, "messages": HELLO}, "model"),
        ({"model": MODEL, "messages": HELLO, "response_format": {"type": "xml"}}, "response_format.type"),
    ],
)
def test_invalid_requests_are_400_naming_the_field(http: httpx.Client, auth_headers: dict[str, str],
                                                   body: dict[str, object], param: str) -> None:
    assert_error_envelope(_post_chat(http, auth_headers, json=body), 400, type="invalid_request_error", param=param)


def test_sdk_raises_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, messages=HELLO, n=3)
    assert raised.value.param == "n"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[])


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_is_404(client: openai.OpenAI, http: httpx.Client, auth_headers: dict[str, str],
                              stream: bool) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=HELLO, stream=stream)
    assert raised.value.code == "model_not_found"
    response = _post_chat(http, auth_headers, json={"model": "no-such-model", "messages": HELLO, "stream": stream})
    assert_error_envelope(response, 404, type="not_found_error", code="model_not_found", param="model")


def test_oversized_body_is_413(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    huge = "x" * (9 * 1024 * 1024)
    response = _post_chat(http, auth_headers, json={"model": MODEL, "messages": [{"role": "user", "content": huge}]})
    assert_error_envelope(response, 413, type="invalid_request_error")


def test_prompt_longer_than_the_context_is_400(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    long_prompt = "hello " * 5000
    response = _post_chat(http, auth_headers, json={"model": MODEL, "messages": [{"role": "user",
                                                                                   "content": long_prompt}]})
    assert_error_envelope(response, 400, type="invalid_request_error", code="context_length_exceeded")


def test_unknown_route_is_404(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    assert_error_envelope(http.get("/v1/nope", headers=auth_headers), 404, type="not_found_error")


def test_wrong_method_on_a_known_path_is_an_error_envelope(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    response = http.delete("/v1/models", headers=auth_headers)
    assert 400 <= response.status_code < 500
    assert response.json()["error"]["request_id"] == response.headers["x-request-id"]


def test_unauthenticated_errors_come_before_validation(http: httpx.Client) -> None:
    assert_error_envelope(http.post("/v1/chat/completions", content=b"{bad"), 401, type="auth_error")
