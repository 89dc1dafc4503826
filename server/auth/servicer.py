"""gRPC transport for jan.auth.v1.AuthService: decode, call the domain, encode."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import grpc
from google.api import httpbody_pb2

from server.auth.api_keys import status_of
from server.auth.oidc.login import OidcLogin
from server.auth.service import AuthService, parse_upgrade
from server.auth.store import ApiKey
from server.core.db import utcnow
from server.core.errors import invalid_request
from server.core.json_body import parse_object
from server.core.pagination import PageRequest, list_fields
from server.core.rpc import caller, metadata, send_http_status, unary
from server.gen.jan.auth.v1 import auth_pb2, auth_pb2_grpc

TOKEN_TYPE = "Bearer"


def api_key_message(key: ApiKey, now: datetime, *, secret: str | None = None) -> auth_pb2.ApiKey:
    fields: dict[str, Any] = {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "suffix": key.suffix,
        "tier": key.tier,
        "created_at": int(key.created_at.timestamp()),
        "expires_at": int(key.expires_at.timestamp()),
        "status": status_of(key, now),
    }
    # Optional fields stay unset, so they are absent from the JSON rather than 0 or "".
    if key.revoked_at is not None:
        fields["revoked_at"] = int(key.revoked_at.timestamp())
    if key.last_used_at is not None:
        fields["last_used_at"] = int(key.last_used_at.timestamp())
    if secret is not None:
        fields["key"] = secret
    return auth_pb2.ApiKey(**fields)


def _present(**fields: str | None) -> dict[str, str]:
    """The optional fields that have a value: the others stay unset, and so absent from the JSON."""
    return {name: value for name, value in fields.items() if value is not None}


def _bearer_token(context: grpc.aio.ServicerContext) -> str:
    scheme, _, token = metadata(context).get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, auth: AuthService, oidc: OidcLogin) -> None:
        self._auth = auth
        self._oidc = oidc

    @unary
    async def GuestLogin(
        self, request: auth_pb2.GuestLoginRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GuestLoginResponse:
        pair = await self._auth.guest_login()
        await send_http_status(context, 201)
        return auth_pb2.GuestLoginResponse(
            user_id=pair.user_id,
            username=pair.username,
            principal_id=pair.user_id,
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=TOKEN_TYPE,
            expires_in=pair.expires_in,
        )

    @unary
    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RefreshTokenResponse:
        # The original also takes the refresh token as `Authorization: Bearer <refresh_token>`.
        refresh_token = request.refresh_token or _bearer_token(context)
        if not refresh_token:
            raise invalid_request(
                "refresh_token is required (in the body or as Authorization: Bearer)", param="refresh_token"
            )
        pair = await self._auth.refresh(refresh_token)
        return auth_pb2.RefreshTokenResponse(
            access_token=pair.access_token,
            refresh_token=pair.refresh_token,
            token_type=TOKEN_TYPE,
            expires_in=pair.expires_in,
            user_id=pair.user_id,
        )

    @unary
    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetJwksResponse:
        # Keys carry only the members of their type, so the other optional fields stay unset.
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.Jwk(**key) for key in self._auth.jwks()["keys"]])

    @unary
    async def GetMe(
        self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.GetMeResponse:
        identity = caller(context)
        profile = await self._auth.me(identity.user_id, identity.auth_method)
        return auth_pb2.GetMeResponse(
            id=profile.id,
            username=profile.username,
            subject=profile.id,
            auth_method=profile.auth_method,
            is_guest=profile.is_guest,
            created_at=int(profile.created_at.timestamp()),
            roles=profile.roles,
            **_present(email=profile.email, name=profile.name, issuer=profile.issuer),
        )

    @unary
    async def StartLogin(
        self, request: auth_pb2.StartLoginRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.StartLoginResponse:
        started = await self._oidc.start(request.redirect_url)
        return auth_pb2.StartLoginResponse(authorization_url=started.authorization_url, state=started.state)

    @unary
    async def FinishLogin(
        self, request: auth_pb2.FinishLoginRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.FinishLoginResponse:
        # Envoy's transcoder decodes %XX in query parameters but leaves form encoding's `+` for a space.
        description = request.error_description.replace("+", " ")
        location = await self._oidc.finish(
            code=request.code, state=request.state, error=request.error, error_description=description
        )
        await send_http_status(context, 302, [("location", location), ("cache-control", "no-store")])
        return auth_pb2.FinishLoginResponse(redirect_url=location)

    @unary
    async def UpgradeAccount(
        self, request: auth_pb2.UpgradeAccountRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.UpgradeAccountResponse:
        upgrade = parse_upgrade(parse_object(request.body.data))
        profile = await self._auth.upgrade(caller(context).user_id, upgrade)
        return auth_pb2.UpgradeAccountResponse(
            status="upgraded", id=profile.id, username=profile.username, email=profile.email or "",
            **_present(name=profile.name),
        )

    @unary
    async def Logout(
        self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.LogoutResponse:
        user_id = caller(context).user_id
        if request.refresh_token:
            revoked = await self._auth.revoke(request.refresh_token, user_id=user_id)
        else:
            await self._auth.log_out_everywhere(user_id)
            revoked = True
        return auth_pb2.LogoutResponse(status="logged out", revoked=revoked)

    @unary
    async def RevokeToken(
        self, request: auth_pb2.RevokeTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.RevokeTokenResponse:
        refresh_token = request.refresh_token or request.token
        if not refresh_token:
            raise invalid_request("refresh_token is required", param="refresh_token", code="missing_required_parameter")
        revoked = await self._auth.revoke(refresh_token)
        return auth_pb2.RevokeTokenResponse(message="Token revoked successfully", revoked=revoked)

    @unary
    async def ValidateToken(
        self, request: auth_pb2.ValidateTokenRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ValidateTokenResponse:
        identity = caller(context)
        profile = await self._auth.me(identity.user_id, identity.auth_method)
        return auth_pb2.ValidateTokenResponse(
            valid=True, user_id=profile.id, username=profile.username, auth_method=profile.auth_method,
            roles=sorted(identity.roles), is_guest=profile.is_guest, **_present(email=profile.email),
        )

    @unary
    async def CreateApiKey(
        self, request: auth_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ApiKey:
        user_id = caller(context).user_id
        api_keys = self._auth.api_keys
        created = await api_keys.create(user_id, api_keys.parse_new(parse_object(request.body.data)))
        await send_http_status(context, 201)
        return api_key_message(created.record, utcnow(), secret=created.key)

    @unary
    async def ListApiKeys(
        self, request: auth_pb2.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.ListApiKeysResponse:
        user_id = caller(context).user_id
        page_request = PageRequest.from_message(request)
        page = await self._auth.api_keys.list_page(user_id, page_request)
        now = utcnow()
        keys = [api_key_message(key, now) for key in page.rows]
        return auth_pb2.ListApiKeysResponse(data=keys, items=keys, **list_fields(page))

    @unary
    async def DeleteApiKey(
        self, request: auth_pb2.DeleteApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> auth_pb2.DeleteApiKeyResponse:
        await self._auth.api_keys.revoke(caller(context).user_id, request.id)
        await send_http_status(context, 204)
        return auth_pb2.DeleteApiKeyResponse(body=httpbody_pb2.HttpBody())
