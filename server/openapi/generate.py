"""Build step: the OpenAPI 3.1 document of the REST API, from the descriptor set Envoy transcodes with.

    python -m server.openapi.generate     (`make gen` runs it through server/protogen.py)

Every `google.api.http` binding (additional bindings too) becomes an operation, shaped the way Envoy's
grpc_json_transcoder maps HTTP to the RPC: `{x}` and `{x=**}` path parameters, the remaining request fields as query
parameters unless `body: "*"`, the body from `body`, the response from `response_body`. Raw JSON endpoints
(`google.api.HttpBody`) have no schema in their protos: hand-written ones in `proto/jan/<area>/v1/openapi/*.json`
(see `overrides.py`) are merged in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2

from server.openapi.overrides import Overrides, load_overrides
from server.openapi.schemas import HTTP_BODY, FieldProto, ProtoIndex, Schema, SchemaBuilder

TITLE = "Jan Server API"
VERSION = "v1"

# Routes Envoy lets through without a credential: envoy/envoy.yaml.j2's public_routes, by RPC. The e2e test
# (tests/e2e/test_api_docs.py) checks every other operation is refused without one.
PUBLIC_METHODS = frozenset({
    "AuthService_GuestLogin", "AuthService_RefreshToken", "AuthService_GetJwks", "AuthService_StartLogin",
    "AuthService_FinishLogin", "AuthService_RevokeToken", "MediaService_GetSignedMediaContent",
    "MediaService_PutSignedMediaContent",
    "SystemService_GetHealth", "SystemService_GetReadiness", "SystemService_GetOpenApiDocument",
    "SystemService_GetDocsPage",
})

# The three ways Envoy accepts a caller (jwt_authn, then ext_authz for API keys).
SECURITY_SCHEMES: dict[str, Schema] = {
    "bearerAuth": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access token from `POST /llm/auth/guest-login`, `POST /llm/auth/refresh` or the identity "
                       "provider's login (5 minutes).",
    },
    "apiKey": {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "An API key from `POST /auth/api-keys` (`sk_live_…`).",
    },
    "apiKeyBearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "sk_live_…",
        "description": "An API key sent as `Authorization: Bearer sk_…` (what OpenAI SDKs send as `api_key`).",
    },
}

ERROR_SCHEMA: Schema = {
    "type": "object",
    "description": "Every error, from the services and from Envoy alike; `request_id` equals the `x-request-id` "
                   "response header.",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "examples": ["invalid_request_error"]},
                "code": {"type": ["string", "null"], "examples": ["not_found"]},
                "message": {"type": "string"},
                "param": {"type": ["string", "null"], "description": "The request field at fault, if one is."},
                "request_id": {"type": "string"},
            },
            "required": ["type", "code", "message", "param", "request_id"],
        },
    },
    "required": ["error"],
}

ERROR_RESPONSE: Schema = {
    "description": "An error in OpenAI's shape.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}

_PATH_VARIABLE = re.compile(r"\{([\w.]+)(?:=[^}]*)?\}")


def build_document(descriptor_set: Path, overrides: Overrides) -> dict[str, Any]:
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes())
    index = ProtoIndex.from_descriptor_set(files)
    schemas = SchemaBuilder(index)
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    for file in files.file:
        if not file.package.startswith("jan."):
            continue
        for service in file.service:
            service_name = f".{file.package}.{service.name}"
            tags.append({"name": service.name, "description": index.comments.get(service_name, "")})
            for method in service.method:
                for verb, path, operation in _operations(schemas, service, method, service_name):
                    overrides.apply(f"{service.name}_{method.name}", operation)
                    if verb in paths.setdefault(path, {}):
                        raise ValueError(f"{verb.upper()} {path} is bound twice")
                    paths[path][verb] = operation
    overrides.check_all_applied()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Jan Server's OpenAI-compatible REST API, transcoded to gRPC by Envoy. Generated from "
                           "proto/ at build time.",
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "security": [{name: []} for name in SECURITY_SCHEMES],
        # Proto order, each RPC's own path before its aliases: Swagger UI lists a service's operations in this order.
        "paths": dict(sorted(paths.items(), key=lambda item: _is_alias_only(item[1]))),
        "components": {
            "schemas": {**dict(sorted(schemas.components.items())), **overrides.schemas, "Error": ERROR_SCHEMA},
            "responses": {"Error": ERROR_RESPONSE},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def _is_alias_only(operations: dict[str, Any]) -> bool:
    return all(re.search(r"_\d+$", operation["operationId"]) for operation in operations.values())


def _operations(
    schemas: SchemaBuilder, service: descriptor_pb2.ServiceDescriptorProto,
    method: descriptor_pb2.MethodDescriptorProto, service_name: str,
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    rule = method.options.Extensions[annotations_pb2.http]
    primary_id = f"{service.name}_{method.name}"
    comment = schemas.index.comments.get(f"{service_name}.{method.name}", method.name)
    for number, binding in enumerate([rule, *rule.additional_bindings]):
        verb, template = _pattern(binding)
        operation: dict[str, Any] = {
            "tags": [service.name],
            "operationId": primary_id if number == 0 else f"{primary_id}_{number}",
            "summary": comment.split("\n")[0].split(". ")[0].rstrip("."),
            "description": comment,
        }
        if number:
            primary_verb, primary_path = _pattern(rule)
            operation["description"] += f"\n\nAlias of `{primary_verb.upper()} {_openapi_path(primary_path)}`."
        path_fields = _PATH_VARIABLE.findall(template)
        parameters = [_path_parameter(schemas, method.input_type, name, template) for name in path_fields]
        if binding.body != "*":
            parameters += _query_parameters(schemas, method.input_type, {*path_fields, binding.body})
        if parameters:
            operation["parameters"] = parameters
        if binding.body:
            operation["requestBody"] = _request_body(schemas, method.input_type, binding.body, frozenset(path_fields))
        operation["responses"] = {
            "200": _response(schemas, method.output_type, binding.response_body),
            "default": {"$ref": "#/components/responses/Error"},
        }
        if primary_id in PUBLIC_METHODS:
            operation["security"] = []
        yield verb, _openapi_path(template), operation


def _pattern(binding: http_pb2.HttpRule) -> tuple[str, str]:
    verb = binding.WhichOneof("pattern")
    if verb is None or verb == "custom":
        raise ValueError(f"unsupported http rule: {binding}")
    return verb, str(getattr(binding, verb))


def _openapi_path(template: str) -> str:
    """`/v1/models/{model=**}` → `/v1/models/{model}`."""
    return _PATH_VARIABLE.sub(lambda match: "{" + match.group(1) + "}", template)


def _field(schemas: SchemaBuilder, message_name: str, name: str) -> FieldProto:
    for fld in schemas.index.messages[message_name].field:
        if fld.name == name:
            return fld
    raise ValueError(f"{message_name} has no field {name}")


def _path_parameter(schemas: SchemaBuilder, message_name: str, name: str, template: str) -> dict[str, Any]:
    fld = _field(schemas, message_name, name)
    description = schemas.index.comments.get(f"{message_name}.{name}", "")
    if f"{{{name}=**}}" in template:
        description += " It may contain `/`: send it as is, or percent-encoded (`%2F`) as OpenAI SDKs do."
    return {"name": name, "in": "path", "required": True, "schema": schemas.field(message_name, fld),
            "description": description.strip()}


def _query_parameters(schemas: SchemaBuilder, message_name: str, bound: set[str]) -> list[dict[str, Any]]:
    """The fields neither in the path nor the body: query parameters. Messages cannot be (Envoy reads only
    scalars, enums and lists of them from the query)."""
    parameters = []
    for fld in schemas.index.messages[message_name].field:
        if fld.name in bound or fld.type in (FieldProto.TYPE_MESSAGE, FieldProto.TYPE_GROUP):
            continue
        parameter: dict[str, Any] = {"name": fld.name, "in": "query", "required": False,
                                     "schema": schemas.field(message_name, fld)}
        if description := schemas.index.comments.get(f"{message_name}.{fld.name}"):
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _request_body(schemas: SchemaBuilder, message_name: str, body: str, path_fields: frozenset[str]) -> dict[str, Any]:
    if body == "*":
        schema = schemas.message(message_name, without=path_fields) if path_fields else schemas.ref(message_name)
        return {"required": False, "content": {"application/json": {"schema": schema}}}
    fld = _field(schemas, message_name, body)
    description = schemas.index.comments.get(f"{message_name}.{body}", "")
    if fld.type_name == HTTP_BODY:
        # The message's comment is where a raw body's JSON shape is written down.
        description = f"{schemas.index.comments.get(message_name, '')}\n\n{description}".strip()
        # A raw body with no hand-written schema yet: any JSON object (the services parse it themselves).
        return {"required": True, "description": description,
                "content": {"application/json": {"schema": {"type": "object"}}}}
    return {"required": True, "description": description,
            "content": {"application/json": {"schema": schemas.field(message_name, fld)}}}


def _response(schemas: SchemaBuilder, message_name: str, response_body: str) -> dict[str, Any]:
    if message_name == HTTP_BODY:
        return {"description": "The raw response body.", "content": {"*/*": {"schema": {}}}}
    if not response_body:
        description = schemas.index.comments.get(message_name, "OK").split("\n")[0]
        return {"description": description, "content": {"application/json": {"schema": schemas.ref(message_name)}}}
    fld = _field(schemas, message_name, response_body)
    description = schemas.index.comments.get(f"{message_name}.{response_body}", "OK")
    schema = {"type": "object"} if fld.type_name == HTTP_BODY else schemas.field(message_name, fld)
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def write_document(descriptor_set: Path, proto_dir: Path, out: Path) -> dict[str, Any]:
    document = build_document(descriptor_set, load_overrides(proto_dir))
    out.write_text(json.dumps(document, indent=1) + "\n")
    return document


if __name__ == "__main__":
    from server.protogen import DESCRIPTOR_SET, OPENAPI_DOCUMENT, PROTO_DIR

    write_document(DESCRIPTOR_SET, PROTO_DIR, OPENAPI_DOCUMENT)
