"""Calls of the Conversations API that its end-to-end tests share."""

from __future__ import annotations

from typing import Any

import httpx

from tests.e2e.conftest import guest_login
from tests.support.stack import Stack


def fresh_user(stack: Stack) -> dict[str, str]:
    """Authorization headers of a new guest: each test's data is its own."""
    return {"Authorization": f"Bearer {guest_login(stack)['access_token']}"}


def create_conversation(http: httpx.Client, headers: dict[str, str], body: dict[str, Any] | None = None,
                        path: str = "/v1/conversations") -> dict[str, Any]:
    response = http.post(path, headers=headers, json=body if body is not None else {})
    assert response.status_code == 200, response.text
    return response.json()


def add_items(http: httpx.Client, headers: dict[str, str], conversation_id: str,
              items: list[dict[str, Any]]) -> dict[str, Any]:
    response = http.post(f"/v1/conversations/{conversation_id}/items", headers=headers, json={"items": items})
    assert response.status_code == 200, response.text
    return response.json()


def list_page(http: httpx.Client, headers: dict[str, str], path: str = "/v1/conversations",
              **params: Any) -> dict[str, Any]:
    response = http.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(page: dict[str, Any]) -> list[str]:
    return [entry["id"] for entry in page["data"]]


def user_message(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
