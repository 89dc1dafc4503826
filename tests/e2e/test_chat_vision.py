"""Image parts in /v1/chat/completions through Envoy. The bundled SmolLM2 has no vision, so images are refused with
OpenAI's error envelope naming the model and the part (delivery to a vision backend is tested in
tests/unit/test_chat_tools.py); `jan_` placeholders in text are resolved by the media service."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, assert_error_envelope
from tests.e2e.test_media import upload_json
from tests.support.conversations import fresh_user
from tests.support.media_images import unique_png
from tests.support.stack import Stack

PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAHnOcQAAAAABJ"
         "RU5ErkJggg==")


def _post(http: httpx.Client, headers: dict[str, str], content: Any, **fields: Any) -> httpx.Response:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    body = {"model": MODEL, "messages": messages, "max_tokens": 5, **fields}
    return http.post("/v1/chat/completions", headers=headers, json=body)


@pytest.mark.parametrize(
    "image",
    [
        {"type": "image_url", "image_url": {"url": PIXEL, "detail": "low"}},
        {"type": "input_image", "image_url": "https://example.com/cat.png"},
        {"type": "image_url", "image_url": {"url": "data:image/png;jan_01jx0000000000000000000000"}},
    ],
)
def test_images_for_a_model_without_vision_are_400(
    http: httpx.Client, auth_headers: dict[str, str], image: dict[str, Any]
) -> None:
    content = [{"type": "text", "text": "What is in this image?"}, image]
    for stream in (False, True):
        response = _post(http, auth_headers, content, stream=stream)
        error = assert_error_envelope(response, 400, type="invalid_request_error", code="model_not_multimodal",
                                      param="messages[1].content[1]")
        assert MODEL in str(error["message"])


def test_the_sdk_sees_the_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=MODEL, max_tokens=5, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": PIXEL}}]}])
    assert raised.value.code == "model_not_multimodal"


def test_text_only_parts_still_work(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    response = _post(http, auth_headers, [{"type": "text", "text": "Say hi."}])
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] is not None


def test_a_placeholder_of_the_users_own_media_in_text_is_resolved(
    http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    media = upload_json(http, auth_headers, unique_png())
    placeholder = f"data:image/png;{media['id']}"
    response = _post(http, auth_headers, f"Describe the image at {placeholder} in one word.")
    assert response.status_code == 200, response.text
    # The model read a link: the prompt holds the presigned URL, far longer than the placeholder.
    plain = _post(http, auth_headers, "Describe the image at data:image/png in one word.")
    assert response.json()["usage"]["prompt_tokens"] > plain.json()["usage"]["prompt_tokens"] + 20


def test_a_placeholder_of_another_users_media_is_a_400_naming_it(
    stack: Stack, http: httpx.Client, auth_headers: dict[str, str]
) -> None:
    owner = fresh_user(stack)
    media = upload_json(http, owner, unique_png())
    response = _post(http, auth_headers, f"What is data:image/png;{media['id']}?")
    error = assert_error_envelope(response, 400, type="invalid_request_error")
    assert media["id"] in str(error["message"])
