"""The OpenAPI document `make gen` builds from proto/: valid OpenAPI 3.1, one operation per HTTP binding, schemas in
the JSON Envoy prints, the hand-written schemas merged, and the public operations exactly the gateway's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2
from openapi_spec_validator import validate

from server.core.config import Settings
from server.gateway.envoy import render_config
from server.openapi.generate import build_document
from server.openapi.overrides import Overrides, load_overrides
from server.openapi.schemas import FieldProto, ProtoIndex, SchemaBuilder
from server.protogen import DESCRIPTOR_SET, OPENAPI_DOCUMENT, PROTO_DIR, ensure_generated

Document = dict[str, Any]


@pytest.fixture(scope="module")
def document() -> Document:
    ensure_generated()
    loaded: Document = json.loads(OPENAPI_DOCUMENT.read_text())
    return loaded


def operations(document: Document) -> dict[str, tuple[str, str, Document]]:
    return {op["operationId"]: (verb, path, op) for path, ops in document["paths"].items() for verb, op in ops.items()}


def schema(document: Document, name: str) -> Document:
    found: Document = document["components"]["schemas"][name]
    return found


def test_the_document_is_valid_openapi_3_1(document: Document) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_every_http_binding_is_an_operation_named_service_method(document: Document) -> None:
    files = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes()).file
    expected = set()
    for file in files:
        for service in file.service if file.package.startswith("jan.") else ():
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                name = f"{service.name}_{method.name}"
                expected |= {name, *(f"{name}_{n}" for n in range(1, len(rule.additional_bindings) + 1))}
    assert set(operations(document)) == expected
    verb, path, _ = operations(document)["LlmService_GetModel"]
    assert (verb, path) == ("get", "/v1/models/{model}")
    assert operations(document)["LlmService_GetModel_1"][1] == "/llm/v1/models/{model}"


def test_parameters_come_from_the_path_template_and_the_remaining_fields(document: Document) -> None:
    _, _, get_model = operations(document)["LlmService_GetModel"]
    (model,) = get_model["parameters"]
    assert model["in"] == "path" and model["required"] and "`/`" in model["description"]
    _, _, list_conversations = operations(document)["ConversationService_ListConversations"]
    query = {p["name"]: p for p in list_conversations["parameters"]}
    assert query["limit"]["in"] == "query" and query["limit"]["schema"]["type"] == "integer"
    assert {"after", "cursor", "order", "offset"} <= set(query)
    _, _, list_items = operations(document)["ConversationService_ListConversationItems"]
    assert list_items["parameters"][0]["in"] == "path"
    assert "conversation_id" not in [p["name"] for p in list_items["parameters"] if p["in"] == "query"]


def test_message_schemas_are_what_envoy_prints(document: Document) -> None:
    project = schema(document, "jan.llm.v1.Project")
    assert {"id", "name", "is_favorite"} <= set(project["required"])  # always printed, zero values included
    assert "instruction" not in project["required"]  # `optional`: omitted when unset
    assert project["properties"]["created_at"]["type"] == "integer"
    assert project["properties"]["instruction"]["description"].startswith("The system message")
    provider = schema(document, "jan.admin.v1.Provider")
    assert provider["properties"]["metadata"]["additionalProperties"] == {"type": "string"}
    model = schema(document, "jan.admin.v1.ProviderModel")
    assert model["properties"]["default_params"]["type"] == "object"  # google.protobuf.Struct
    assert schema(document, "jan.auth.v1.GetMeResponse")["properties"]["roles"]["type"] == "array"


def test_enums_are_strings_and_64_bit_integers_are_strings() -> None:
    file = descriptor_pb2.FileDescriptorProto(name="t.proto", package="t", syntax="proto3")
    file.enum_type.add(name="Color").value.add(name="COLOR_RED", number=0)
    message = file.message_type.add(name="Thing")
    message.field.add(name="color", number=1, type=FieldProto.TYPE_ENUM, type_name=".t.Color")
    message.field.add(name="size", number=2, type=FieldProto.TYPE_INT64)
    builder = SchemaBuilder(ProtoIndex.from_descriptor_set(descriptor_pb2.FileDescriptorSet(file=[file])))
    thing = builder.message(".t.Thing")
    assert thing["properties"]["color"] == {"$ref": "#/components/schemas/t.Color"}
    assert builder.components["t.Color"] == {"type": "string", "enum": ["COLOR_RED"]}
    assert thing["properties"]["size"]["type"] == "string"


def test_raw_json_endpoints_have_hand_written_schemas(document: Document) -> None:
    ops = operations(document)
    body = ops["LlmService_CreateChatCompletion"][2]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert "text/event-stream" in ops["LlmService_CreateChatCompletion_1"][2]["responses"]["200"]["content"]
    providers = ops["ModelCatalogService_ListProviders"][2]["responses"]["200"]["content"]["application/json"]
    assert providers["schema"]["type"] == "array"
    assert "multipart/form-data" in ops["MediaService_UploadMedia"][2]["requestBody"]["content"]
    assert "201" in ops["AuthService_GuestLogin"][2]["responses"]
    assert "content" not in ops["AuthService_DeleteApiKey"][2]["responses"]["204"]
    # No raw body is left with the generator's placeholder (any JSON object) but the document itself.
    generic = [
        op_id for op_id, (_, _, op) in ops.items()
        if any(media.get("schema") == {"type": "object"} for part in [op.get("requestBody", {}),
               *(r for status, r in op["responses"].items() if status.startswith("2"))]
               for media in part.get("content", {}).values())
    ]
    assert generic == ["SystemService_GetOpenApiDocument"]


def test_every_error_is_the_shared_openai_envelope(document: Document) -> None:
    for _, _, op in operations(document).values():
        assert op["responses"]["default"] == {"$ref": "#/components/responses/Error"}
    assert schema(document, "Error")["properties"]["error"]["required"] == [
        "type", "code", "message", "param", "request_id"]


def test_public_operations_are_exactly_the_gateways_public_routes(document: Document, tmp_path: Path) -> None:
    """An operation without `security` is one Envoy lets through without a credential, and no other."""
    settings = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    config = yaml.safe_load(render_config(settings, DESCRIPTOR_SET))
    (route_config,) = [f["typed_config"]["route_config"] for f in config["static_resources"]["listeners"][0][
        "filter_chains"][0]["filters"]]
    public = [r["match"] for r in route_config["virtual_hosts"][0]["routes"]
              if r.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_authz", {}).get("disabled")]

    def is_public(path: str) -> bool:
        example = re.sub(r"\{media_id\}", "jan_" + "0" * 26, path)
        example = re.sub(r"\{\w+\}", "x", example)
        return any(example == m.get("path") or example.startswith(m.get("prefix", "\0"))
                   or re.fullmatch(m.get("safe_regex", {}).get("regex", "\0"), example) for m in public)

    for _, path, op in operations(document).values():
        assert (op.get("security") == []) == is_public(path), path


def test_an_override_for_an_unknown_rpc_fails_the_build() -> None:
    overrides = load_overrides(PROTO_DIR)
    typo = Overrides(schemas=overrides.schemas, operations={**overrides.operations, "LlmService_Typo": {}})
    with pytest.raises(ValueError, match="LlmService_Typo"):
        build_document(DESCRIPTOR_SET, typo)
