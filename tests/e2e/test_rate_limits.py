"""Rate limits enforced by Envoy, on a dedicated stack with small limits (the suite's shared stacks have huge ones):
per JWT user, per API key by tier (minute and day), per client IP on public routes, per route group; the headers
every limited response carries; the 429 envelope with Retry-After, and the openai SDK's RateLimitError.

Every test talks from its own loopback address (127.0.0.x), so per-IP buckets are its own. Limits are token buckets
that refill continuously (5/min = one request every 12 s); the requests here are fast enough not to see a refill.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing

import httpx
import openai
import pytest

from tests.e2e.conftest import MODEL, assert_error_envelope
from tests.support.stack import Stack, make_stack

USER_PER_MINUTE = 5
IP_PER_MINUTE = 3
ROUTE_GROUP = "/auth/me"
ROUTE_GROUP_PER_MINUTE = 2
TIERS = {
    "free": {"per_minute": 3, "per_day": 50},
    "pro": {"per_minute": 60, "per_day": 100_000},
    "enterprise": {"per_minute": 600},
    # A tier whose daily quota runs out first, to see the daily limiter refuse.
    "trial": {"per_minute": 100, "per_day": 2},
}
_addresses = (f"127.0.0.{n}" for n in itertools.count(10))


@pytest.fixture(scope="module")
def limited_stack() -> Iterator[Stack]:
    stack = make_stack(
        rate_limit_user_per_minute=str(USER_PER_MINUTE),
        rate_limit_ip_per_minute=str(IP_PER_MINUTE),
        rate_limit_routes=json.dumps({ROUTE_GROUP: ROUTE_GROUP_PER_MINUTE}),
        api_key_tiers=json.dumps(TIERS),
        api_key_default_tier="free",
    )
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture
def http(limited_stack: Stack) -> Iterator[httpx.Client]:
    """A client with a loopback address of its own."""
    transport = httpx.HTTPTransport(local_address=next(_addresses))
    with httpx.Client(base_url=limited_stack.base_url, transport=transport, timeout=60) as client:
        yield client


def login(http: httpx.Client) -> dict[str, str]:
    response = http.post("/llm/auth/guest-login")
    assert response.status_code == 201, response.text
    return response.json()


def new_key(http: httpx.Client, user: dict[str, str]) -> dict[str, str]:
    response = http.post("/auth/api-keys", headers={"Authorization": f"Bearer {user['access_token']}"},
                         json={"name": "limits"})
    assert response.status_code == 201, response.text
    return response.json()


def sdk(stack: Stack, http: httpx.Client, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key=api_key, max_retries=0, http_client=http)


def window(response: httpx.Response, name: str) -> tuple[int, int]:
    return int(response.headers[f"x-ratelimit-limit-{name}"]), int(response.headers[f"x-ratelimit-remaining-{name}"])


def generic(response: httpx.Response) -> tuple[int, int]:
    return int(response.headers["x-ratelimit-limit"]), int(response.headers["x-ratelimit-remaining"])


def assert_reset_within(response: httpx.Response, seconds: int) -> None:
    """X-RateLimit-Reset is a unix time, as in the seed: when the window's full quota is back."""
    reset = int(response.headers["x-ratelimit-reset"])
    assert time.time() - 2 <= reset <= time.time() + seconds + 2


def assert_rate_limited(response: httpx.Response, *, retry_after_at_most: int) -> None:
    assert_error_envelope(response, 429, type="rate_limit_error", code="rate_limit_exceeded")
    assert 1 <= int(response.headers["retry-after"]) <= retry_after_at_most
    assert response.headers["x-ratelimit-remaining"] == "0"


def test_a_jwt_user_has_a_bucket_of_its_own(limited_stack: Stack, http: httpx.Client) -> None:
    user = login(http)
    headers = {"Authorization": f"Bearer {user['access_token']}"}
    for remaining in range(USER_PER_MINUTE - 1, -1, -1):
        response = http.get("/v1/models", headers=headers)
        assert response.status_code == 200
        assert window(response, "minute") == generic(response) == (USER_PER_MINUTE, remaining)
        assert "x-ratelimit-limit-day" not in response.headers
        assert response.headers["x-auth-method"] == "jwt"
        assert_reset_within(response, 60)

    # A client naming an API-key tier does not get that tier's bucket.
    refused = http.get("/v1/models", headers={**headers, "x-api-key-tier": "enterprise", "x-api-key-id": "k"})
    assert_rate_limited(refused, retry_after_at_most=60 // USER_PER_MINUTE)
    assert refused.headers["x-auth-method"] == "jwt"
    with pytest.raises(openai.RateLimitError) as raised:
        sdk(limited_stack, http, user["access_token"]).models.list()
    assert raised.value.code == "rate_limit_exceeded" and raised.value.type == "rate_limit_error"

    other = login(http)
    assert http.get("/v1/models", headers={"Authorization": f"Bearer {other['access_token']}"}).status_code == 200


def test_a_free_key_gets_three_requests_a_minute_and_the_day_headers(limited_stack: Stack, http: httpx.Client) -> None:
    user = login(http)
    first, second = new_key(http, user), new_key(http, user)
    assert first["tier"] == "free"
    for used in range(1, 4):
        response = http.get("/v1/models", headers={"X-API-Key": first["key"]})
        assert response.status_code == 200
        assert window(response, "minute") == generic(response) == (3, 3 - used)
        assert window(response, "day") == (50, 50 - used)
        assert response.headers["x-auth-method"] == "apikey"

    fourth = http.get("/v1/models", headers={"X-API-Key": first["key"]})
    assert_rate_limited(fourth, retry_after_at_most=20)
    assert window(fourth, "minute") == (3, 0)
    with pytest.raises(openai.RateLimitError):
        sdk(limited_stack, http, first["key"]).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=1
        )

    # Buckets are per key, not per user.
    assert window(http.get("/v1/models", headers={"X-API-Key": second["key"]}), "minute") == (3, 2)


def test_a_daily_quota_refuses_once_spent(limited_stack: Stack, http: httpx.Client) -> None:
    key = new_key(http, login(http))
    # There is no endpoint to change a key's tier yet: do it as an operator would, in the database.
    with closing(sqlite3.connect(limited_stack.data_dir / "jan.db")) as database, database:
        database.execute("UPDATE api_keys SET tier = 'trial' WHERE id = ?", (key["id"],))

    for remaining in (1, 0):
        response = http.get("/v1/models", headers={"Authorization": f"Bearer {key['key']}"})
        assert response.status_code == 200
        assert window(response, "day") == generic(response) == (2, remaining)
        assert window(response, "minute")[0] == 100
        assert_reset_within(response, 86400)

    refused = http.get("/v1/models", headers={"Authorization": f"Bearer {key['key']}"})
    assert_rate_limited(refused, retry_after_at_most=86400 // 2)
    assert int(refused.headers["retry-after"]) > 3600
    assert generic(refused) == window(refused, "day") == (2, 0)
    assert window(refused, "minute")[0] == 100


def test_guest_login_is_limited_per_client_ip(limited_stack: Stack, http: httpx.Client) -> None:
    for remaining in range(IP_PER_MINUTE - 1, -1, -1):
        response = http.post("/auth/guest-login")
        assert response.status_code == 201
        assert window(response, "minute") == (IP_PER_MINUTE, remaining)
        assert "x-auth-method" not in response.headers
    assert_rate_limited(http.post("/v1/auth/guest-login"), retry_after_at_most=60 // IP_PER_MINUTE)

    elsewhere = httpx.HTTPTransport(local_address=next(_addresses))
    with httpx.Client(base_url=limited_stack.base_url, transport=elsewhere) as other_ip:
        assert other_ip.post("/auth/guest-login").status_code == 201


def test_a_route_group_has_its_own_tighter_limit(http: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {login(http)['access_token']}"}
    for remaining in range(ROUTE_GROUP_PER_MINUTE - 1, -1, -1):
        response = http.get(ROUTE_GROUP, headers=headers)
        assert response.status_code == 200
        assert generic(response) == (ROUTE_GROUP_PER_MINUTE, remaining)
    assert_rate_limited(http.get(ROUTE_GROUP, headers=headers), retry_after_at_most=60 // ROUTE_GROUP_PER_MINUTE)
    # Other paths still have the user's general bucket, less what the group's allowed requests took from it.
    elsewhere = http.get("/v1/models", headers=headers)
    assert elsewhere.status_code == 200
    assert generic(elsewhere) == (USER_PER_MINUTE, USER_PER_MINUTE - ROUTE_GROUP_PER_MINUTE - 1)
