"""API keys: creation (format, HMAC-only storage, limits), listing, revocation, the gateway's authenticator (cache,
expiry, last_used_at), and the ext_authz and AuthService gRPC servicers over a real loopback server. Real database
(SQLite and PostgreSQL), no mocks; through Envoy, see tests/e2e/test_api_keys.py."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import stat
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import store
from server.auth.api_keys import (
    ApiKeyAuthenticator,
    ApiKeyService,
    CreatedApiKey,
    load_or_create_secret,
    parse_new_api_key,
    status_of,
)
from server.auth.ext_authz import ExtAuthzServicer
from server.auth.oidc.login import OidcLogin
from server.auth.oidc.provider import OidcProvider
from server.auth.service import AuthService
from server.auth.servicer import AuthServicer
from server.auth.tokens import TokenIssuer
from server.core.config import Settings
from server.core.db import create_engine, session_factory, utcnow
from server.core.errors import ApiError
from server.core.pagination import PageRequest
from server.gen.jan.auth.v1 import auth_pb2, auth_pb2_grpc

KEY_FORMAT = re.compile(r"sk_live_[0-9a-f]{48}")


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", database_url=database_url)  # type: ignore[call-arg]




@pytest.fixture
def keys(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> ApiKeyService:
    return ApiKeyService(settings, sessions)


async def new_user(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions.begin() as session:
        return (await store.create_user(session, username=f"user-{id(object())}-{utcnow().timestamp()}",
                                        is_guest=True)).id


async def create(keys: ApiKeyService, user_id: str, **payload: Any) -> CreatedApiKey:
    return await keys.create(user_id, keys.parse_new({"name": "script", **payload}))


async def set_key(sessions: async_sessionmaker[AsyncSession], key_id: str, **values: Any) -> None:
    async with sessions.begin() as session:
        await session.execute(update(store.ApiKey).where(store.ApiKey.id == key_id).values(**values))


async def test_a_key_is_shown_once_and_stored_only_as_its_hmac(
    keys: ApiKeyService, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user_id = await new_user(sessions)
    created = await create(keys, user_id, expires_in_days=30)

    assert KEY_FORMAT.fullmatch(created.key)
    record = created.record
    assert (record.prefix, record.suffix, record.tier, record.name) == ("sk_live", created.key[-4:], "pro", "script")
    assert record.id.startswith("key_") and record.revoked_at is None and record.last_used_at is None
    assert record.expires_at - record.created_at == timedelta(days=30)

    secret = settings.api_key_secret_path.read_bytes()
    assert stat.S_IMODE(settings.api_key_secret_path.stat().st_mode) == 0o600
    assert record.key_hash == hmac.new(secret, created.key.encode(), hashlib.sha256).hexdigest()
    assert record.key_hash != hashlib.sha256(created.key.encode()).hexdigest()
    async with sessions() as session:
        row = (await session.execute(select(store.ApiKey.__table__).where(store.ApiKey.id == record.id))).one()
    assert all(created.key[len("sk_live_"):] not in str(value) for value in row)


def test_the_secret_persists_and_a_configured_one_wins(tmp_path: Path) -> None:
    generated = Settings(_env_file=None, data_dir=tmp_path)  # type: ignore[call-arg]
    first = load_or_create_secret(generated)
    assert len(first) == 64 and load_or_create_secret(generated) == first

    configured = Settings(_env_file=None, data_dir=tmp_path / "other", api_key_secret="s" * 32)  # type: ignore[call-arg]
    assert load_or_create_secret(configured) == b"s" * 32
    assert not configured.api_key_secret_path.exists()
    with pytest.raises(ValueError, match="at least 32 characters"):
        Settings(_env_file=None, api_key_secret="short")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 7}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "expires_in_days": 366}, "expires_in_days"),
        ({"name": "x", "expires_in_days": "30"}, "expires_in_days"),
        ({"name": "x", "expires_in": 10**6}, "expires_in"),
        ({"name": "x", "expires_in": 366 * 86400 * 10**9}, "expires_in"),
        ({"name": "x", "expires_in": 10**9, "expires_in_days": 1}, "expires_in"),
    ],
)
def test_invalid_create_requests_name_the_field(payload: dict[str, Any], param: str) -> None:
    with pytest.raises(ApiError) as error:
        parse_new_api_key(payload, Settings(_env_file=None))  # type: ignore[call-arg]
    assert (error.value.status, error.value.param) == (400, param)


def test_lifetimes_in_days_or_go_nanoseconds() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert parse_new_api_key({"name": "x"}, settings).lifetime is None
    assert parse_new_api_key({"name": "x", "expires_in_days": 365}, settings).lifetime == timedelta(days=365)
    # The original's `expires_in` is a Go time.Duration: 2160h, in nanoseconds.
    go_duration = parse_new_api_key({"name": "x", "expires_in": 2160 * 3600 * 10**9}, settings)
    assert go_duration.lifetime == timedelta(hours=2160)


async def test_at_most_five_active_keys_and_revoked_or_expired_ones_do_not_count(
    keys: ApiKeyService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user_id = await new_user(sessions)
    created = [await create(keys, user_id) for _ in range(5)]
    with pytest.raises(ApiError) as error:
        await create(keys, user_id)
    assert (error.value.status, error.value.code) == (400, "api_key_limit_reached")

    await keys.revoke(user_id, created[0].record.id)
    await create(keys, user_id)
    await set_key(sessions, created[1].record.id, expires_at=utcnow() - timedelta(seconds=1))
    await create(keys, user_id)
    with pytest.raises(ApiError):
        await create(keys, user_id)
    # Another user's keys are counted separately.
    await create(keys, await new_user(sessions))


async def test_concurrent_creates_cannot_pass_the_limit(
    keys: ApiKeyService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user_id = await new_user(sessions)
    results = await asyncio.gather(*(create(keys, user_id) for _ in range(8)), return_exceptions=True)
    assert sum(isinstance(result, CreatedApiKey) for result in results) == 5
    assert all(isinstance(result, CreatedApiKey | ApiError) for result in results)


async def test_list_pages_newest_first_with_statuses_and_only_the_owners_keys(
    keys: ApiKeyService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user_id, other_id = await new_user(sessions), await new_user(sessions)
    active, revoked, expired = [await create(keys, user_id) for _ in range(3)]
    await create(keys, other_id)
    await keys.revoke(user_id, revoked.record.id)
    await set_key(sessions, expired.record.id, expires_at=utcnow() - timedelta(seconds=1))

    page = await keys.list_page(user_id, PageRequest(limit=2))
    assert [key.id for key in page.rows] == [expired.record.id, revoked.record.id]
    assert page.has_more and page.total == 3
    rest = await keys.list_page(user_id, PageRequest(limit=2, after=revoked.record.id))
    assert [key.id for key in rest.rows] == [active.record.id] and not rest.has_more
    now = utcnow()
    assert [status_of(key, now) for key in [*page.rows, *rest.rows]] == ["expired", "revoked", "active"]


async def test_revoking_anothers_or_an_unknown_key_is_404_and_revoking_twice_is_fine(
    keys: ApiKeyService, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user_id, other_id = await new_user(sessions), await new_user(sessions)
    key = await create(keys, user_id)
    for owner, key_id in ((other_id, key.record.id), (user_id, "key_unknown")):
        with pytest.raises(ApiError) as error:
            await keys.revoke(owner, key_id)
        assert (error.value.status, error.value.code) == (404, "not_found")
    await keys.revoke(user_id, key.record.id)
    await keys.revoke(user_id, key.record.id)


async def test_the_authenticator_recognises_keys_and_caches_verdicts_briefly(
    keys: ApiKeyService, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user_id = await new_user(sessions)
    created = await create(keys, user_id)
    cached = ApiKeyAuthenticator(settings, sessions)
    uncached = ApiKeyAuthenticator(settings.model_copy(update={"api_key_cache_seconds": 0}), sessions)

    identity = await cached.authenticate(created.key)
    assert (identity.user_id, identity.key_id, identity.tier) == (user_id, created.record.id, "pro")
    await keys.revoke(user_id, created.record.id)
    # Within api_key_cache_seconds the verdict stands; a fresh look-up sees the revocation.
    assert (await cached.authenticate(created.key)).key_id == created.record.id
    with pytest.raises(ApiError, match="revoked") as error:
        await uncached.authenticate(created.key)
    assert (error.value.status, error.value.code) == (401, "invalid_api_key")

    for garbage in ("sk_live_" + "0" * 48, "sk_live_short", "", created.key.upper()):
        with pytest.raises(ApiError, match="Invalid API key"):
            await uncached.authenticate(garbage)


async def test_expiry_is_checked_on_every_request_even_from_the_cache(
    keys: ApiKeyService, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await create(keys, await new_user(sessions), expires_in=2 * 10**9)
    authenticator = ApiKeyAuthenticator(settings, sessions)
    await authenticator.authenticate(created.key)
    await asyncio.sleep(2.1)
    with pytest.raises(ApiError, match="expired"):
        await authenticator.authenticate(created.key)


async def test_last_used_at_is_written_at_most_once_a_minute(
    keys: ApiKeyService, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await create(keys, await new_user(sessions))
    authenticator = ApiKeyAuthenticator(settings.model_copy(update={"api_key_cache_seconds": 0}), sessions)

    async def last_used() -> Any:
        async with sessions() as session:
            return await session.scalar(select(store.ApiKey.last_used_at).where(store.ApiKey.id == created.record.id))

    await authenticator.authenticate(created.key)
    first = await last_used()
    assert first is not None and abs((utcnow() - first).total_seconds()) < 5
    await authenticator.authenticate(created.key)
    assert await last_used() == first
    await set_key(sessions, created.record.id, last_used_at=first - timedelta(seconds=61))
    await authenticator.authenticate(created.key)
    assert await last_used() > first


async def test_a_key_of_a_tier_no_longer_configured_gets_the_default_tier(
    keys: ApiKeyService, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    created = await create(keys, await new_user(sessions))
    await set_key(sessions, created.record.id, tier="retired")
    assert (await ApiKeyAuthenticator(settings, sessions).authenticate(created.key)).tier == "pro"


# --- over gRPC ---


@pytest.fixture
async def channel(settings: Settings, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[grpc.aio.Channel]:
    issuer = TokenIssuer(settings)
    await issuer.load_or_create()
    server = grpc.aio.server()
    auth = AuthService(settings, sessions, issuer)
    # No identity provider configured (tests/e2e/test_oidc.py has one).
    oidc = OidcLogin(settings, sessions, OidcProvider(settings), auth)
    auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(auth, oidc), server)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        ExtAuthzServicer(ApiKeyAuthenticator(settings, sessions)), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


def check_request(**headers: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    request.attributes.request.http.headers.update({"x-request-id": "req-1", **headers})
    return request


async def test_grpc_api_key_lifecycle(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    login = await stub.GuestLogin(auth_pb2.GuestLoginRequest())
    identity = (("x-user-id", login.user_id), ("x-jwt-payload", "e30"))

    call = stub.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(body={"data": b'{"name": "ci"} trailing garbage'}), metadata=identity
    )
    created = await call
    assert ("x-http-status", "201") in tuple(await call.initial_metadata())
    assert KEY_FORMAT.fullmatch(created.key) and created.status == "active" and created.name == "ci"

    listed = await stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=identity)
    assert [key.id for key in listed.data] == [key.id for key in listed.items] == [created.id]
    assert not listed.data[0].HasField("key") and not listed.data[0].HasField("revoked_at")
    assert (listed.object, listed.total, listed.total_count, listed.first_id) == ("list", 1, 1, created.id)

    call = stub.DeleteApiKey(auth_pb2.DeleteApiKeyRequest(id=created.id), metadata=identity)
    deleted = await call
    assert ("x-http-status", "204") in tuple(await call.initial_metadata()) and deleted.body.data == b""
    (revoked,) = (await stub.ListApiKeys(auth_pb2.ListApiKeysRequest(), metadata=identity)).data
    assert revoked.status == "revoked" and revoked.HasField("revoked_at")


async def test_ext_authz_allows_a_key_and_sets_the_identity_headers(channel: grpc.aio.Channel) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    login = await stub.GuestLogin(auth_pb2.GuestLoginRequest())
    created = await stub.CreateApiKey(
        auth_pb2.CreateApiKeyRequest(body={"data": b'{"name": "ci"}'}), metadata=(("x-user-id", login.user_id),)
    )
    authz = external_auth_pb2_grpc.AuthorizationStub(channel)
    for headers in ({"x-api-key": created.key}, {"authorization": f"Bearer {created.key}"}):
        response = await authz.Check(check_request(**headers))
        assert response.status.code == 0 and response.HasField("ok_response")
        added = {option.header.key: option.header.value for option in response.ok_response.headers}
        assert added == {
            "x-user-id": login.user_id, "x-auth-method": "apikey", "x-api-key-id": created.id, "x-api-key-tier": "pro",
            # A guest has no roles; the header is still set, so nothing else can fill it in.
            "x-user-roles": "",
        }
        assert set(response.ok_response.headers_to_remove) == {"x-api-key", "authorization"}


@pytest.mark.parametrize(
    ("headers", "code", "challenge"),
    [
        ({}, "unauthorized", True),
        ({"authorization": "Basic dXNlcjpwYXNz"}, "unauthorized", True),
        ({"authorization": "Bearer rt_not-an-access-token"}, "unauthorized", True),
        ({"authorization": "Bearer sk_live_" + "0" * 48}, "invalid_api_key", False),
        ({"x-api-key": "anything"}, "invalid_api_key", False),
    ],
)
async def test_ext_authz_denies_with_the_clients_401(
    channel: grpc.aio.Channel, headers: dict[str, str], code: str, challenge: bool
) -> None:
    response = await external_auth_pb2_grpc.AuthorizationStub(channel).Check(check_request(**headers))
    assert response.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    denied = response.denied_response
    assert denied.status.code == 401
    sent = {option.header.key: option.header.value for option in denied.headers}
    assert sent["content-type"] == "application/json"
    assert ("www-authenticate" in sent) is challenge
    error = json.loads(denied.body)["error"]
    assert (error["type"], error["code"], error["request_id"]) == ("auth_error", code, "req-1")


async def test_ext_authz_answers_503_when_keys_cannot_be_checked(settings: Settings, tmp_path: Path) -> None:
    broken = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'jan.db'}")
    servicer = ExtAuthzServicer(ApiKeyAuthenticator(settings, session_factory(broken)))
    response = await servicer.Check(check_request(**{"x-api-key": "sk_live_" + "0" * 48}), None)  # type: ignore[arg-type]
    await broken.dispose()
    assert response.denied_response.status.code == 503
    assert json.loads(response.denied_response.body)["error"]["code"] == "service_unavailable"
