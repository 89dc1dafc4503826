"""The Responses API through Envoy with the `openai` SDK: plain and streamed text, stored responses and their
input items, history (`previous_response_id`, `conversation`), background runs and cancel, ownership, errors.

SmolLM2-135M answers poorly, so nothing here asserts what the model says, only what the API shows. Tool
orchestration is in test_responses_tools.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, assert_error_envelope, guest_login
from tests.support.stack import Stack

# A schema the grammar fills in a few tokens, so a response reliably completes (instead of hitting the limit).
SHORT_ANSWER = {"format": {"type": "json_schema", "name": "answer", "strict": True,
                           "schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
                                      "additionalProperties": False}}}


def bearer(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


def create(http: httpx.Client, user: dict[str, str], **body: Any) -> dict[str, Any]:
    response = http.post("/v1/responses", headers=bearer(user), json={"model": MODEL, "tools": [], **body})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def wait_for(http: httpx.Client, user: dict[str, str], response_id: str, statuses: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        body: dict[str, Any] = http.get(f"/v1/responses/{response_id}", headers=bearer(user)).json()
        if body["status"] in statuses or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def test_plain_text_response_is_stored_in_openais_shape(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Say hello.", tools=[], max_output_tokens=12,
                                       metadata={"case": "plain"})
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete") and response.error is None
    if response.status == "incomplete":
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "max_output_tokens"
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "output_text" and message.content[0].text
    assert response.output_text == message.content[0].text
    assert response.usage is not None and response.usage.output_tokens <= 12
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.metadata == {"case": "plain"} and response.max_output_tokens == 12
    fetched = client.responses.retrieve(response.id)
    assert fetched.model_dump() == response.model_dump()


def test_text_format_json_schema_is_decoded_under_the_schema(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Pick a number.", tools=[], text=SHORT_ANSWER)
    assert response.status == "completed"
    assert isinstance(json.loads(response.output_text)["n"], int)


def test_streamed_events_are_typed_numbered_and_in_order(client: openai.OpenAI) -> None:
    stream = client.responses.create(model=MODEL, input="Say hello.", tools=[], max_output_tokens=8, stream=True)
    events = list(stream)
    assert [event.sequence_number for event in events] == list(range(len(events)))
    types = [event.type for event in events]
    deltas = types.count("response.output_text.delta")
    assert deltas >= 1
    assert types == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.incomplete" if types[-1] == "response.incomplete" else "response.completed",
    ]
    final = events[-1].response  # type: ignore[union-attr]
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert final.output_text == text == events[-4].text  # type: ignore[union-attr]
    assert events[0].response.status == "in_progress"  # type: ignore[union-attr]
    assert client.responses.retrieve(final.id).output_text == text


def test_the_sdk_stream_helper_consumes_the_events(client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Pick a number.", tools=[], text=SHORT_ANSWER) as stream:
        texts = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == "".join(texts)


def test_previous_response_id_brings_its_input_and_output(client: openai.OpenAI) -> None:
    first = client.responses.create(model=MODEL, input="My name is Ada.", instructions="Be brief.", tools=[],
                                    max_output_tokens=8)
    second = client.responses.create(model=MODEL, input="What is my name?", previous_response_id=first.id, tools=[],
                                     max_output_tokens=8)
    alone = client.responses.create(model=MODEL, input="What is my name?", tools=[], max_output_tokens=8)
    assert second.previous_response_id == first.id and second.instructions is None
    assert first.usage and second.usage and alone.usage
    # The prompt held the first turn (its input and its answer) besides the new question.
    assert second.usage.input_tokens >= alone.usage.input_tokens + first.usage.output_tokens
    items = client.responses.input_items.list(second.id)
    assert [item.content[0].text for item in items.data] == ["What is my name?"]  # type: ignore[union-attr]
    assert [item.type for item in client.responses.input_items.list(first.id).data] == ["message"]


def test_a_conversation_gets_the_turn_and_gives_its_history(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    first = client.responses.create(model=MODEL, input="Hello!", conversation=conversation.id, tools=[],
                                    max_output_tokens=8)
    assert first.conversation is not None and first.conversation.id == conversation.id
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(item.type, getattr(item, "role", None)) for item in items] == [
        ("message", "user"), ("message", "user"), ("message", "assistant")
    ]
    assert items[2].content[0].text == first.output_text  # type: ignore[union-attr]
    second = client.responses.create(model=MODEL, input="Hello!", conversation={"id": conversation.id}, tools=[],
                                     max_output_tokens=8)
    assert first.usage and second.usage
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    assert len(client.conversations.items.list(conversation.id).data) == 5


def test_input_items_are_listed_in_pages(client: openai.OpenAI) -> None:
    texts = ["one", "two", "three"]
    response = client.responses.create(
        model=MODEL, input=[{"role": "user", "content": text} for text in texts], tools=[], max_output_tokens=4
    )
    newest = client.responses.input_items.list(response.id, limit=2)
    assert [item.content[0].text for item in newest.data] == ["three", "two"]  # type: ignore[union-attr]
    assert newest.has_more and newest.first_id == newest.data[0].id and newest.last_id == newest.data[1].id
    rest = client.responses.input_items.list(response.id, limit=2, after=newest.last_id)
    assert [item.content[0].text for item in rest.data] == ["one"] and not rest.has_more  # type: ignore[union-attr]
    oldest = client.responses.input_items.list(response.id, order="asc")
    assert [item.content[0].text for item in oldest.data] == texts  # type: ignore[union-attr]


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    response = client.responses.create(model=MODEL, input="Hi", tools=[], max_output_tokens=4, store=False)
    assert response.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_delete_answers_the_deleted_object(http: httpx.Client, guest: dict[str, str]) -> None:
    response = create(http, guest, input="Hi", max_output_tokens=4)
    deleted = http.delete(f"/v1/responses/{response['id']}", headers=bearer(guest))
    assert deleted.status_code == 200 and deleted.json() == {"id": response["id"], "object": "response",
                                                              "deleted": True}
    assert_error_envelope(http.get(f"/v1/responses/{response['id']}", headers=bearer(guest)), 404,
                          type="not_found_error", code="response_not_found")


def test_background_response_is_queued_then_polled(http: httpx.Client, guest: dict[str, str]) -> None:
    queued = create(http, guest, input="Hi", max_output_tokens=4, background=True)
    assert queued["status"] == "queued" and queued["background"] is True and queued["output"] == []
    done = wait_for(http, guest, queued["id"], {"completed", "incomplete"})
    assert done["status"] in ("completed", "incomplete") and done["output_text"]


def test_cancel_stops_a_background_response(http: httpx.Client, guest: dict[str, str]) -> None:
    queued = create(http, guest, input="Write a very long story about the sea.", max_output_tokens=4000,
                    background=True)
    wait_for(http, guest, queued["id"], {"in_progress"})
    started = time.monotonic()
    cancelled = http.post(f"/v1/responses/{queued['id']}/cancel", headers=bearer(guest))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and time.monotonic() - started < 10
    time.sleep(0.5)
    assert http.get(f"/v1/responses/{queued['id']}", headers=bearer(guest)).json()["status"] == "cancelled"
    # Cancelling a finished response returns it as it is.
    again = http.post(f"/v1/responses/{queued['id']}/cancel", headers=bearer(guest))
    assert again.status_code == 200 and again.json()["status"] == "cancelled"


def test_a_client_leaving_mid_stream_cancels_the_response(stack: Stack, guest: dict[str, str]) -> None:
    body = {"model": MODEL, "input": "Write a very long story about the sea.", "tools": [], "stream": True,
            "max_output_tokens": 4000}
    response_id = None
    with httpx.Client(base_url=stack.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/responses", headers=bearer(guest), json=body) as streamed:
            for line in streamed.iter_lines():
                if line.startswith("data: ") and '"response.output_text.delta"' in line:
                    break
                if line.startswith("data: ") and response_id is None:
                    response_id = json.loads(line[6:])["response"]["id"]
        assert response_id is not None
        assert wait_for(http, guest, response_id, {"cancelled"})["status"] == "cancelled"


def test_the_original_paths_are_aliases(http: httpx.Client, guest: dict[str, str]) -> None:
    response = http.post("/responses/v1/responses", headers=bearer(guest),
                         json={"model": MODEL, "input": "Hi", "tools": [], "max_output_tokens": 4})
    assert response.status_code == 200, response.text
    fetched = http.get(f"/responses/v1/responses/{response.json()['id']}", headers=bearer(guest))
    assert fetched.status_code == 200 and fetched.json()["id"] == response.json()["id"]


def test_another_users_response_is_404_everywhere(stack: Stack, http: httpx.Client, guest: dict[str, str]) -> None:
    response = create(http, guest, input="Hi", max_output_tokens=4)
    other = bearer(guest_login(stack))
    path = f"/v1/responses/{response['id']}"
    for method, url in (("GET", path), ("DELETE", path), ("POST", f"{path}/cancel"), ("GET", f"{path}/input_items")):
        assert_error_envelope(http.request(method, url, headers=other), 404, type="not_found_error",
                              code="response_not_found")
    continued = http.post("/v1/responses", headers=other,
                          json={"model": MODEL, "input": "Hi", "previous_response_id": response["id"]})
    assert_error_envelope(continued, 404, type="not_found_error", param="previous_response_id")
    assert http.get(path, headers=bearer(guest)).status_code == 200


def test_an_api_key_caller_works(stack: Stack, http: httpx.Client, guest: dict[str, str]) -> None:
    key = http.post("/auth/api-keys", headers=bearer(guest), json={"name": "responses"}).json()["key"]
    with openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=key, max_retries=0) as sdk:
        response = sdk.responses.create(model=MODEL, input="Hi", tools=[], max_output_tokens=4)
        assert response.output_text
    # The same user, whichever credential: the key's response is the guest's.
    assert http.get(f"/v1/responses/{response.id}", headers=bearer(guest)).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "Hi"}, "model"),
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": 5}, "input"),
        ({"model": MODEL, "input": [{"role": "robot", "content": "Hi"}]}, "input[0].role"),
        ({"model": MODEL, "input": "Hi", "temperature": 3}, "temperature"),
        ({"model": MODEL, "input": "Hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": MODEL, "input": "Hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"model": MODEL, "input": "Hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": MODEL, "input": "Hi", "tools": ["no_such_tool"]}, "tools"),
        ({"model": MODEL, "input": "Hi", "tools": [{"type": "mcp", "server_label": "x",
                                                    "server_url": "https://mcp.example.com/mcp"}]},
         "tools[0].server_url"),
        ({"model": MODEL, "input": "Hi", "tools": [], "tool_choice": "required"}, "tool_choice"),
        ({"model": MODEL, "input": "Hi", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"model": MODEL, "input": "Hi", "background": True, "stream": True}, "stream"),
        ({"model": MODEL, "input": "Hi", "background": True, "store": False}, "background"),
        ({"model": MODEL, "input": "Hi", "previous_response_id": "resp_x", "conversation": "conv_x"},
         "previous_response_id"),
        ({"model": MODEL, "input": "Hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ],
)
def test_invalid_requests_are_400_naming_the_param(
    http: httpx.Client, auth_headers: dict[str, str], body: dict[str, Any], param: str
) -> None:
    response = http.post("/v1/responses", headers=auth_headers, json=body)
    assert_error_envelope(response, 400, type="invalid_request_error", param=param)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        ({"model": "no-such-model", "input": "Hi"}, "model_not_found", "model"),
        ({"model": MODEL, "input": "Hi", "previous_response_id": "resp_nope"}, "response_not_found",
         "previous_response_id"),
        ({"model": MODEL, "input": "Hi", "conversation": "conv_nope"}, "conversation_not_found", "conversation"),
    ],
)
def test_unknown_references_are_404(
    http: httpx.Client, auth_headers: dict[str, str], body: dict[str, Any], code: str, param: str
) -> None:
    response = http.post("/v1/responses", headers=auth_headers, json=body)
    assert_error_envelope(response, 404, type="not_found_error", code=code, param=param)


def test_unknown_response_is_404(http: httpx.Client, auth_headers: dict[str, str]) -> None:
    for path in ("/v1/responses/resp_nope", "/v1/responses/resp_nope/input_items"):
        assert_error_envelope(http.get(path, headers=auth_headers), 404, type="not_found_error",
                              code="response_not_found")
