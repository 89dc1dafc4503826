"""gRPC transport for jan.auth.v1.AuthService: decode, call the domain, encode."""

from __future__ import annotations

import grpc

from server.auth.service import AuthService
from server.core.errors import invalid_request
from server.core.rpc import caller, metadata, send_http_status, unary
from server.gen.jan.auth.v1 import auth_pb2, auth_pb2_grpc

TOKEN_TYPE = "Bearer"


def _bearer_token(context: grpc.aio.ServicerContext) -> str:
    scheme, _, token = metadata(context).get("authorization", "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, auth: AuthService) -> None:
        self._auth = auth

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
        )
