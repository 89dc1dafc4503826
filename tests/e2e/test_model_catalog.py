"""The model catalog through the real Envoy: an admin registers a real OpenAI-compatible provider
(`python -m llama_cpp.server`), its models are synced and routed to, enabled and disabled, aliased, given defaults
and limits; capability checks; provider keys stored encrypted; non-admins refused."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.e2e.conftest import MODEL, assert_error_envelope, guest_login
from tests.e2e.test_admin import Admin, create_admin
from tests.support.llama_server import LlamaServer, start_llama_server
from tests.support.ports import refused_port
from tests.support.stack import Stack

PROVIDER_KEY = "provider-secret-key-1234"
QUESTION = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    # The provider requires its key, so a model answering proves the decrypted key reached it.
    server = start_llama_server(threads=1, api_key=PROVIDER_KEY)
    yield server
    server.stop()


@pytest.fixture
def admin(stack: Stack) -> Admin:
    return create_admin(stack)[0]


@pytest.fixture
def admin_http(stack: Stack, admin: Admin) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.base_url, headers={"X-API-Key": admin.key}, timeout=60) as client:
        yield client


@pytest.fixture
def provider(admin_http: httpx.Client, llama_server: LlamaServer) -> Iterator[dict[str, Any]]:
    """A freshly registered provider (unique vendor, so its model ids are its own); deleted afterwards."""
    vendor = f"llama-{uuid.uuid4().hex[:8]}"
    response = admin_http.post("/v1/admin/providers", json={
        "name": f"llama.cpp {vendor}", "vendor": vendor, "base_url": llama_server.base_url,
        "api_key": PROVIDER_KEY, "metadata": {"description": "test provider"},
    })
    assert response.status_code == 200, response.text
    created = response.json()
    yield created
    admin_http.delete(f"/v1/admin/providers/{created['id']}")


def _sdk(stack: Stack) -> openai.OpenAI:
    token = guest_login(stack)["access_token"]
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=token, max_retries=0)


def _model_ids(http: httpx.Client, **headers: str) -> list[str]:
    response = http.get("/v1/models", headers=headers)
    assert response.status_code == 200, response.text
    return [model["id"] for model in response.json()["data"]]


def test_a_registered_provider_serves_its_synced_models(
    stack: Stack, admin_http: httpx.Client, provider: dict[str, Any]
) -> None:
    assert provider["id"].startswith("prov_") and provider["object"] == "provider"
    assert provider["api_key_hint"] == "...1234"
    assert PROVIDER_KEY not in str(provider)
    assert provider["model_count"] == provider["model_active_count"] == len(provider["models"]) >= 1
    model = provider["models"][0]
    assert model["id"].startswith("pmdl_") and model["provider_id"] == provider["id"]
    assert model["model_public_id"].startswith(provider["vendor"] + "/")
    assert model["active"] is True

    public_id = model["model_public_id"]
    assert public_id in _model_ids(admin_http)
    with _sdk(stack) as sdk:
        completion = sdk.chat.completions.create(model=public_id, messages=QUESTION, max_tokens=8, temperature=0)
        assert completion.model == public_id and completion.choices[0].message.content
        chunks = list(sdk.chat.completions.create(model=public_id, messages=QUESTION, max_tokens=8, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    listed = admin_http.get("/v1/admin/providers").json()
    assert isinstance(listed, list)
    (mine,) = [p for p in listed if p["id"] == provider["id"]]
    assert mine["model_count"] >= 1 and PROVIDER_KEY not in str(listed)


def test_the_providers_key_is_stored_encrypted(stack: Stack, provider: dict[str, Any]) -> None:
    async def stored_key() -> tuple[str, str]:
        engine = create_async_engine(stack.env["JAN_DATABASE_URL"])
        try:
            async with engine.connect() as connection:
                row = (await connection.execute(
                    text("SELECT api_key_encrypted, api_key_hint FROM providers WHERE id = :id"),
                    {"id": provider["id"]},
                )).one()
                return row[0], row[1]
        finally:
            await engine.dispose()

    encrypted, hint = asyncio.run(stored_key())
    assert hint == "...1234"
    assert PROVIDER_KEY not in encrypted and "1234" not in encrypted and len(encrypted) > len(PROVIDER_KEY)


def test_provider_data_lists_every_providers_copy(
    stack: Stack, admin_http: httpx.Client, provider: dict[str, Any]
) -> None:
    response = admin_http.get("/v1/models", headers={"X-PROVIDER-DATA": "true"})
    assert response.status_code == 200
    models = {m["id"]: m for m in response.json()["data"]}
    public_id = provider["models"][0]["model_public_id"]
    assert models[public_id]["provider_id"] == provider["id"]
    assert models[public_id]["provider_vendor"] == provider["vendor"]
    assert models[public_id]["provider_name"] == provider["name"]
    assert models[MODEL]["provider_id"] == "settings"
    plain = admin_http.get("/v1/models").json()["data"]
    assert all("provider_id" not in m for m in plain)

    with _sdk(stack) as sdk:
        providers = sdk.get("/models/providers", cast_to=object)
    assert isinstance(providers, list)
    by_id = {p["id"]: p for p in providers}
    assert by_id["settings"]["vendor"] == "jan"
    assert by_id[provider["id"]] == {
        "id": provider["id"], "name": provider["name"], "vendor": provider["vendor"],
        "base_url": provider["base_url"], "active": True, "metadata": {"description": "test provider"},
    }


def test_disabled_models_and_providers_are_not_served(
    stack: Stack, admin_http: httpx.Client, provider: dict[str, Any]
) -> None:
    model = provider["models"][0]
    public_id = model["model_public_id"]
    path = f"/v1/admin/models/provider-models/{model['id']}"
    assert admin_http.patch(path, json={"active": False}).json()["active"] is False
    assert public_id not in _model_ids(admin_http)
    with _sdk(stack) as sdk, pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model=public_id, messages=QUESTION, max_tokens=4)
    assert raised.value.code == "model_not_found"

    toggled = admin_http.post("/v1/admin/models/provider-models/bulk-toggle",
                              json={"enable": True, "provider_id": provider["id"]})
    assert toggled.status_code == 200 and toggled.json()["updated_count"] == 1
    assert public_id in _model_ids(admin_http)

    assert admin_http.patch(f"/v1/admin/providers/{provider['id']}", json={"active": False}).json()["active"] is False
    assert public_id not in _model_ids(admin_http)
    admin_http.patch(f"/v1/admin/providers/{provider['id']}", json={"active": True})
    assert public_id in _model_ids(admin_http)


def test_an_alias_routes_to_its_model(stack: Stack, admin_http: httpx.Client, provider: dict[str, Any]) -> None:
    public_id = provider["models"][0]["model_public_id"]
    alias = f"qwen2.5-0.5b-instruct-{uuid.uuid4().hex[:6]}"
    response = admin_http.put(f"/v1/admin/models/aliases/{alias}", json={"model": public_id})
    assert response.status_code == 200, response.text
    assert response.json() == {**response.json(), "alias": alias, "model": public_id, "object": "model.alias"}
    assert alias in _model_ids(admin_http)
    with _sdk(stack) as sdk:
        completion = sdk.chat.completions.create(model=alias, messages=QUESTION, max_tokens=4)
        assert completion.model == public_id
        assert sdk.models.retrieve(alias).id == alias
    assert alias in [a["alias"] for a in admin_http.get("/v1/admin/models/aliases").json()["data"]]

    unknown = admin_http.put(f"/v1/admin/models/aliases/{alias}", json={"model": "no-such-model"})
    assert_error_envelope(unknown, 400, type="invalid_request_error", code="model_not_found", param="model")
    hiding = admin_http.put(f"/v1/admin/models/aliases/{MODEL}", json={"model": public_id})
    assert_error_envelope(hiding, 409, type="invalid_request_error", code="conflict", param="alias")

    assert admin_http.delete(f"/v1/admin/models/aliases/{alias}").json()["deleted"] is True
    with _sdk(stack) as sdk, pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model=alias, messages=QUESTION, max_tokens=4)
    gone = admin_http.delete(f"/v1/admin/models/aliases/{alias}")
    assert_error_envelope(gone, 404, type="not_found_error", code="not_found")


def test_default_params_and_token_limits_apply(
    stack: Stack, admin_http: httpx.Client, provider: dict[str, Any]
) -> None:
    model = provider["models"][0]
    path = f"/v1/admin/models/provider-models/{model['id']}"
    updated = admin_http.patch(path, json={"default_params": {"max_tokens": 3, "temperature": 0}})
    assert updated.status_code == 200, updated.text
    assert updated.json()["default_params"] == {"max_tokens": 3, "temperature": 0}
    with _sdk(stack) as sdk:
        completion = sdk.chat.completions.create(model=model["model_public_id"], messages=QUESTION)
        assert completion.usage is not None and completion.usage.completion_tokens <= 3
        assert completion.choices[0].finish_reason == "length"

        limited = admin_http.patch(path, json={"default_params": {}, "token_limits": {"max_completion_tokens": 5}})
        assert limited.json()["token_limits"]["max_completion_tokens"] == 5
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.chat.completions.create(model=model["model_public_id"], messages=QUESTION, max_tokens=50)
        assert raised.value.code == "max_tokens_exceeded" and raised.value.param == "max_tokens"

    bad = admin_http.patch(path, json={"default_params": {"temperature": 5}})
    assert_error_envelope(bad, 400, type="invalid_request_error", param="default_params.temperature")
    unknown = admin_http.patch(path, json={"default_params": {"messages": []}})
    assert_error_envelope(unknown, 400, type="invalid_request_error", param="default_params.messages")


def test_capabilities_give_clear_400s(stack: Stack, admin_http: httpx.Client, provider: dict[str, Any]) -> None:
    model = provider["models"][0]
    path = f"/v1/admin/models/provider-models/{model['id']}"
    admin_http.patch(path, json={"supports_tools": False})
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with _sdk(stack) as sdk:
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.chat.completions.create(model=model["model_public_id"], messages=QUESTION, tools=[tool])
        assert (raised.value.code, raised.value.param) == ("model_does_not_support_tools", "tools")
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.chat.completions.create(model=model["model_public_id"],
                                        messages=[{"role": "user", "content": [image]}])
        assert raised.value.code == "model_not_multimodal"
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.embeddings.create(model=MODEL, input="hello")
        assert (raised.value.code, raised.value.param) == ("model_not_embedding", "model")

        admin_http.patch(path, json={"supports_embeddings": True})
        with pytest.raises(openai.BadRequestError) as raised:
            sdk.chat.completions.create(model=model["model_public_id"], messages=QUESTION)
        assert raised.value.code == "model_not_chat"


def test_settings_models_are_tuned_but_keep_their_capabilities(admin_http: httpx.Client) -> None:
    listed = admin_http.get("/v1/admin/models/provider-models", params={"provider_id": "settings"}).json()
    (row,) = [m for m in listed["data"] if m["model_public_id"] == MODEL]
    assert row["provider_vendor"] == "llamacpp" and row["supports_tools"] is True
    path = f"/v1/admin/models/provider-models/{row['id']}"
    capability = admin_http.patch(path, json={"supports_images": True})
    assert_error_envelope(capability, 400, type="invalid_request_error", code="read_only_field",
                          param="supports_images")
    renamed = admin_http.patch(path, json={"display_name": "SmolLM2 135M"})
    assert renamed.status_code == 200 and renamed.json()["display_name"] == "SmolLM2 135M"


def test_provider_registration_is_validated(admin_http: httpx.Client, provider: dict[str, Any]) -> None:
    def create(**fields: Any) -> httpx.Response:
        return admin_http.post("/v1/admin/providers", json={"name": f"p-{uuid.uuid4().hex[:8]}", "vendor": "vllm",
                                                            "base_url": "http://127.0.0.1:1/v1", **fields})

    duplicate = create(name=provider["name"], sync=False)
    assert_error_envelope(duplicate, 409, type="invalid_request_error", code="conflict", param="name")
    assert_error_envelope(create(base_url="ftp://example.com"), 400, type="invalid_request_error", param="base_url")
    assert_error_envelope(create(vendor="Not A Slug!"), 400, type="invalid_request_error", param="vendor")
    with refused_port() as port:
        down = create(base_url=f"http://127.0.0.1:{port}/v1")
        assert_error_envelope(down, 502, type="internal_error", code="provider_unreachable")
        stored = create(base_url=f"http://127.0.0.1:{port}/v1", sync=False)
    assert stored.status_code == 200 and stored.json()["models"] == []
    assert admin_http.delete(f"/v1/admin/providers/{stored.json()['id']}").json()["deleted"] is True
    deleted = admin_http.get(f"/v1/admin/providers/{stored.json()['id']}")
    assert_error_envelope(deleted, 404, type="not_found_error", code="not_found")


def test_a_deleted_provider_takes_its_models_along(
    stack: Stack, admin_http: httpx.Client, provider: dict[str, Any]
) -> None:
    public_id = provider["models"][0]["model_public_id"]
    assert admin_http.delete(f"/v1/admin/providers/{provider['id']}").status_code == 200
    assert public_id not in _model_ids(admin_http)
    with _sdk(stack) as sdk, pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model=public_id, messages=QUESTION, max_tokens=4)


@pytest.mark.parametrize("path", ["/v1/admin/providers", "/v1/admin/models/provider-models",
                                  "/llm/v1/admin/models/aliases"])
def test_the_catalog_is_for_admins_only(stack: Stack, http: httpx.Client, path: str) -> None:
    token = guest_login(stack)["access_token"]
    response = http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert_error_envelope(response, 403, type="permission_error", code="permission_denied")
