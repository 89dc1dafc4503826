"""Auth: signing keys and JWKS, guest login, refresh rotation and reuse detection, GetMe, migrations, and the
gRPC servicer over a real loopback server. Real database, no mocks."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import grpc
import jwt
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import store
from server.auth.oidc.login import OidcLogin
from server.auth.oidc.provider import OidcProvider
from server.auth.service import AuthService, TokenPair, hash_refresh_token
from server.auth.servicer import AuthServicer
from server.auth.tokens import TokenIssuer
from server.core.config import Settings
from server.core.db import Base, create_engine, utcnow
from server.core.errors import ApiError
from server.core.migrate import run_migrations
from server.gen.jan.auth.v1 import auth_pb2, auth_pb2_grpc


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", database_url=database_url)  # type: ignore[call-arg]




@pytest.fixture
async def issuer(settings: Settings) -> TokenIssuer:
    issuer = TokenIssuer(settings)
    await issuer.load_or_create()
    return issuer


@pytest.fixture
def auth(settings: Settings, sessions: async_sessionmaker[AsyncSession], issuer: TokenIssuer) -> AuthService:
    return AuthService(settings, sessions, issuer)


@pytest.fixture
async def stub(
    auth: AuthService, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    server = grpc.aio.server()
    # No identity provider configured: its login answers 501 (tests/unit/test_oidc.py).
    oidc = OidcLogin(settings, sessions, OidcProvider(settings), auth)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(auth, oidc), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)
    await server.stop(None)


def verify_with_published_jwks(token: str, settings: Settings) -> dict[str, object]:
    """Verifies the way Envoy does: only with the JWKS file, never with the issuer object."""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    key_set = jwt.PyJWKSet.from_dict(json.loads(settings.jwks_path.read_text()))
    return jwt.decode(
        token,
        key_set[header["kid"]],
        algorithms=["ES256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        options={"require": ["exp", "iat", "nbf", "sub", "jti"]},
    )


async def expire_refresh_token(sessions: async_sessionmaker[AsyncSession], token: str) -> None:
    async with sessions.begin() as session:
        await session.execute(
            update(store.RefreshToken)
            .where(store.RefreshToken.token_hash == hash_refresh_token(token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


async def test_guest_login_creates_user_and_tokens_that_verify_with_the_jwks(
    auth: AuthService, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    pair = await auth.guest_login()

    async with sessions() as session:
        user = await store.get_user(session, pair.user_id)
        stored = await store.find_refresh_token(session, hash_refresh_token(pair.refresh_token))
    assert user is not None and user.is_guest and user.username == pair.username
    assert pair.user_id.startswith("user_") and pair.username.startswith("guest-")
    assert stored is not None and stored.user_id == pair.user_id and stored.used_at is None
    assert pair.refresh_token.startswith("rt_") and pair.expires_in == settings.access_token_ttl_seconds

    claims = verify_with_published_jwks(pair.access_token, settings)
    assert claims["sub"] == pair.user_id
    assert claims["username"] == pair.username and claims["guest"] is True
    assert claims["exp"] == claims["iat"] + settings.access_token_ttl_seconds  # type: ignore[operator]
    assert (
        jwt.get_unverified_header(pair.access_token)["kid"]
        == json.loads(settings.jwks_path.read_text())["keys"][0]["kid"]
    )


async def test_signing_key_persists_and_jwks_file_is_written(settings: Settings, issuer: TokenIssuer) -> None:
    again = TokenIssuer(settings)
    await again.load_or_create()

    assert again.kid == issuer.kid
    assert stat.S_IMODE(settings.signing_key_path.stat().st_mode) == 0o600
    assert json.loads(settings.jwks_path.read_text()) == issuer.jwks()
    (key,) = issuer.jwks()["keys"]
    assert set(key) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
    assert (key["kty"], key["crv"], key["alg"], key["use"], key["kid"]) == (
        "EC",
        "P-256",
        "ES256",
        "sig",
        again.kid,
    )
    # Tokens from the reloaded key verify against the first instance: same key, not just same kid.
    token = again.mint_access_token("user_x", "guest-x", is_guest=True)
    assert verify_with_published_jwks(token, settings)["sub"] == "user_x"


async def test_refresh_rotates_the_token_pair(auth: AuthService, settings: Settings) -> None:
    first = await auth.guest_login()

    second = await auth.refresh(first.refresh_token)
    third = await auth.refresh(second.refresh_token)

    assert len({first.refresh_token, second.refresh_token, third.refresh_token}) == 3
    assert second.user_id == third.user_id == first.user_id and second.username == first.username
    assert verify_with_published_jwks(third.access_token, settings)["sub"] == first.user_id


async def test_reusing_a_spent_refresh_token_revokes_the_whole_family(auth: AuthService) -> None:
    login = await auth.guest_login()
    rotated = await auth.refresh(login.refresh_token)
    other_login = await auth.guest_login()

    with pytest.raises(ApiError) as reuse:
        await auth.refresh(login.refresh_token)
    assert reuse.value.status == 401 and "already used" in reuse.value.message

    with pytest.raises(ApiError) as revoked:
        await auth.refresh(rotated.refresh_token)
    assert revoked.value.status == 401 and "revoked" in revoked.value.message
    # Another login's family is untouched.
    assert (await auth.refresh(other_login.refresh_token)).user_id == other_login.user_id


async def test_expired_and_unknown_refresh_tokens_are_rejected(
    auth: AuthService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    login = await auth.guest_login()
    await expire_refresh_token(sessions, login.refresh_token)

    with pytest.raises(ApiError) as expired:
        await auth.refresh(login.refresh_token)
    assert expired.value.status == 401 and "expired" in expired.value.message

    with pytest.raises(ApiError) as unknown:
        await auth.refresh("rt_not-a-token")
    assert unknown.value.status == 401 and unknown.value.type == "auth_error"


async def test_concurrent_refreshes_of_one_token_have_exactly_one_winner(auth: AuthService) -> None:
    login = await auth.guest_login()

    outcomes = await asyncio.gather(
        *(auth.refresh(login.refresh_token) for _ in range(4)), return_exceptions=True
    )

    winners = [o for o in outcomes if isinstance(o, TokenPair)]
    losers = [o for o in outcomes if isinstance(o, ApiError) and o.status == 401]
    assert len(winners) == 1 and len(losers) == 3, outcomes
    # The losers presented a spent token, which counts as reuse: the winner's new token is revoked too.
    with pytest.raises(ApiError):
        await auth.refresh(winners[0].refresh_token)


async def test_me_returns_the_user_and_401_for_an_unknown_one(auth: AuthService) -> None:
    login = await auth.guest_login()

    profile = await auth.me(login.user_id, "jwt")
    assert (profile.id, profile.username, profile.is_guest, profile.auth_method) == (
        login.user_id, login.username, True, "jwt"
    )  # fmt: skip

    with pytest.raises(ApiError) as error:
        await auth.me("user_doesnotexist00", "jwt")
    assert error.value.status == 401


async def test_migrations_are_idempotent_and_match_the_models(database_url: str) -> None:
    await run_migrations(database_url)
    await run_migrations(database_url)

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_grpc_guest_login_answers_201_with_the_token_pair(
    stub: auth_pb2_grpc.AuthServiceStub, settings: Settings
) -> None:
    call = stub.GuestLogin(auth_pb2.GuestLoginRequest())
    response = await call

    assert ("x-http-status", "201") in tuple(await call.initial_metadata())
    assert response.user_id == response.principal_id and response.username.startswith("guest-")
    assert response.token_type == "Bearer" and response.expires_in == settings.access_token_ttl_seconds
    assert response.refresh_token.startswith("rt_")
    assert verify_with_published_jwks(response.access_token, settings)["sub"] == response.user_id


async def test_grpc_get_me_uses_the_gateway_identity(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    login = await stub.GuestLogin(auth_pb2.GuestLoginRequest())

    me = await stub.GetMe(
        auth_pb2.GetMeRequest(), metadata=(("x-user-id", login.user_id), ("x-jwt-payload", "e30"))
    )
    assert (me.id, me.subject, me.username, me.auth_method, me.is_guest) == (
        login.user_id, login.user_id, login.username, "jwt", True
    )  # fmt: skip
    assert abs(me.created_at - utcnow().timestamp()) < 60

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetMe(auth_pb2.GetMeRequest())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert json.loads(error.value.details() or "")["error"]["type"] == "auth_error"


async def test_grpc_refresh_takes_the_token_from_body_or_authorization(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    login = await stub.GuestLogin(auth_pb2.GuestLoginRequest())

    from_header = await stub.RefreshToken(
        auth_pb2.RefreshTokenRequest(), metadata=(("authorization", f"Bearer {login.refresh_token}"),)
    )
    from_body = await stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=from_header.refresh_token))
    assert from_header.user_id == from_body.user_id == login.user_id and from_body.token_type == "Bearer"

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.RefreshToken(auth_pb2.RefreshTokenRequest())
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert json.loads(missing.value.details() or "")["error"]["param"] == "refresh_token"

    with pytest.raises(grpc.aio.AioRpcError) as spent:
        await stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=login.refresh_token))
    assert spent.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_get_jwks_publishes_the_signing_key(
    stub: auth_pb2_grpc.AuthServiceStub, issuer: TokenIssuer
) -> None:
    response = await stub.GetJwks(auth_pb2.GetJwksRequest())

    (key,) = response.keys
    assert (key.kty, key.crv, key.alg, key.use, key.kid) == ("EC", "P-256", "ES256", "sig", issuer.kid)
    (published,) = issuer.jwks()["keys"]
    assert key.x == published["x"] and key.y == published["y"]
    assert not key.HasField("n") and not key.HasField("e")
