"""Envoy's external authorization check (envoy.service.auth.v3.Authorization) for requests without our JWT.

Envoy asks here only when a protected route is called without one of our access tokens (jwt_authn verifies
those itself, in C++). An identity provider's access token, which jwt_authn has verified and whose payload it
passes in the request's metadata, becomes the user with its issuer and subject (server/auth/oidc/direct.py).
An API key, from `X-API-Key` or `Authorization: Bearer` (what the openai SDK sends), becomes the identity headers
the services trust plus what the rate limiter keys on. Either credential is removed before the request goes
upstream. Anything else gets the 401 the client sees, in the OpenAI error envelope.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from server.auth.api_keys import ApiKeyAuthenticator, ApiKeyIdentity
from server.auth.oidc.direct import OidcIdentity, OidcTokenUsers
from server.core.errors import ApiError, unauthorized, unavailable
from server.core.ids import new_request_id
from server.core.rpc import ROLES_HEADER, struct_json

log = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"
# Set here for API-key requests; Envoy strips client-sent copies (envoy.yaml.j2, header_mutation).
USER_ID_HEADER = "x-user-id"
AUTH_METHOD_HEADER = "x-auth-method"
KEY_ID_HEADER = "x-api-key-id"
KEY_TIER_HEADER = "x-api-key-tier"
# What a bearer token that is meant as an API key starts with (the default prefix is sk_live).
API_KEY_SHAPE = "sk_"
# Where jwt_authn puts the verified payload of an identity provider's token (envoy.yaml.j2, payload_in_metadata).
JWT_AUTHN_NAMESPACE = "envoy.filters.http.jwt_authn"
IDP_PAYLOAD_KEY = "idp_jwt_payload"

_GRPC_CODE_BY_STATUS = {401: code_pb2.UNAUTHENTICATED, 503: code_pb2.UNAVAILABLE}


def presented_key(headers: dict[str, str]) -> tuple[str | None, bool]:
    """The credential a request carries, and whether it is meant as an API key (rather than, say, a stray token)."""
    key = headers.get(API_KEY_HEADER, "").strip()
    if key:
        return key, True
    scheme, _, token = headers.get("authorization", "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None, False
    return token, token.startswith(API_KEY_SHAPE)


def idp_payload(request: external_auth_pb2.CheckRequest) -> dict[str, Any] | None:
    """The payload of an identity provider's token that jwt_authn verified for this request, if any."""
    metadata = request.attributes.metadata_context.filter_metadata.get(JWT_AUTHN_NAMESPACE)
    if metadata is None or IDP_PAYLOAD_KEY not in metadata.fields:
        return None
    return struct_json(metadata.fields[IDP_PAYLOAD_KEY].struct_value)


class ExtAuthzServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, authenticator: ApiKeyAuthenticator, idp_tokens: OidcTokenUsers | None = None) -> None:
        """`idp_tokens` maps the identity provider's tokens to users; None when no provider is configured (then
        Envoy has no provider that could verify one)."""
        self._authenticator = authenticator
        self._idp_tokens = idp_tokens

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        headers = dict(request.attributes.request.http.headers)
        # Envoy's x-request-id, which it also puts on the response; error bodies repeat it.
        request_id = headers.get("x-request-id") or new_request_id()
        try:
            payload = idp_payload(request)
            if payload is not None and self._idp_tokens is not None:
                return _allowed_idp_token(await self._idp_tokens.identity(payload))
            key, looks_like_a_key = presented_key(headers)
            if key is None:
                error = unauthorized(
                    "Authentication required: send an access token or API key as 'Authorization: Bearer ...', "
                    "or an API key as 'X-API-Key'"
                )
                return _denied(error, request_id, challenge='Bearer realm="jan"')
            if not looks_like_a_key:
                error = unauthorized("Invalid bearer token: expected a JWT access token or an API key")
                return _denied(error, request_id, challenge='Bearer realm="jan", error="invalid_token"')
            return _allowed(await self._authenticator.authenticate(key))
        except ApiError as error:
            return _denied(error, request_id)
        except Exception:
            # A database outage must not look like a bad key (401), which clients would not retry.
            log.exception("Credential check failed")
            return _denied(unavailable("Credentials cannot be checked right now; retry shortly"), request_id)


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def _allowed(identity: ApiKeyIdentity) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[
                _header(USER_ID_HEADER, identity.user_id),
                _header(AUTH_METHOD_HEADER, "apikey"),
                _header(KEY_ID_HEADER, identity.key_id),
                _header(KEY_TIER_HEADER, identity.tier),
                # The key owner's roles, which Envoy's RBAC filter checks on the admin routes.
                _header(ROLES_HEADER, ",".join(identity.roles)),
            ],
            # The key never reaches the services (or their logs).
            headers_to_remove=[API_KEY_HEADER, "authorization"],
        ),
    )


def _allowed_idp_token(identity: OidcIdentity) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[
                _header(USER_ID_HEADER, identity.user_id),
                _header(AUTH_METHOD_HEADER, "oidc"),
                _header(ROLES_HEADER, ",".join(identity.roles)),
            ],
            headers_to_remove=["authorization"],
        ),
    )


def _denied(error: ApiError, request_id: str, *, challenge: str | None = None) -> external_auth_pb2.CheckResponse:
    headers = [_header("content-type", "application/json")]
    if challenge is not None:
        headers.append(_header("www-authenticate", challenge))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_GRPC_CODE_BY_STATUS.get(error.status, code_pb2.PERMISSION_DENIED)),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=error.status),
            headers=headers,
            body=error.json(request_id),
        ),
    )
