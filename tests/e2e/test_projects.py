"""Projects through Envoy: create, list (pagination), get, update, delete, validation, and two-user isolation."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import assert_error_envelope, guest_login
from tests.support.stack import Stack

PREFIXES = ["/v1", "/llm/v1"]
PROJECT_FIELDS = {"id", "object", "name", "is_favorite", "is_archived", "created_at", "updated_at"}


def user(stack: Stack) -> dict[str, str]:
    """Auth headers of a fresh guest, so tests never see each other's projects."""
    return {"Authorization": f"Bearer {guest_login(stack)['access_token']}"}


def create(http: httpx.Client, headers: dict[str, str], name: str, **fields: Any) -> dict[str, Any]:
    response = http.post("/v1/projects", headers=headers, json={"name": name, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def list_projects(http: httpx.Client, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    response = http.get("/v1/projects", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


# --- create and get -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_create_answers_201_with_the_project(stack: Stack, http: httpx.Client, prefix: str) -> None:
    headers = user(stack)
    before = int(time.time())
    response = http.post(f"{prefix}/projects", headers=headers, json={"name": "  Research  "})
    assert response.status_code == 201, response.text
    project = response.json()
    # instruction and archived_at are unset, so absent.
    assert set(project) == PROJECT_FIELDS
    assert re.fullmatch(r"proj_[0-9a-z]{16}", project["id"])
    assert project["object"] == "project"
    assert project["name"] == "Research"
    assert project["is_favorite"] is False and project["is_archived"] is False
    assert before <= project["created_at"] <= time.time() + 1
    assert project["updated_at"] == project["created_at"]

    fetched = http.get(f"{prefix}/projects/{project['id']}", headers=headers)
    assert fetched.status_code == 200
    assert fetched.json() == project


def test_create_keeps_an_instruction_and_treats_an_empty_one_as_none(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    project = create(http, headers, "Translator", instruction="Answer in French.\nBe brief.")
    assert project["instruction"] == "Answer in French.\nBe brief."
    assert "instruction" not in create(http, headers, "Plain", instruction="")
    assert "instruction" not in create(http, headers, "Null", instruction=None)


def test_create_accepts_the_longest_name_and_instruction(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    # Lengths are characters, not bytes; surrounding spaces are trimmed before counting.
    assert create(http, headers, " " + "é" * 120 + " ")["name"] == "é" * 120
    assert len(create(http, headers, "long", instruction="x" * 32768)["instruction"]) == 32768


def test_create_ignores_trailing_bytes_after_the_json_object(stack: Stack, http: httpx.Client) -> None:
    headers = {**user(stack), "Content-Type": "application/json"}
    response = http.post("/v1/projects", headers=headers, content=b'{"name": "Lenient"} trailing garbage')
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "Lenient"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"name": "two\nlines"}, "name"),
        ({"name": "nul\x00byte"}, "name"),
        ({"name": "delete\x7f"}, "name"),
        ({"name": 42}, "name"),
        ({"name": ["a"]}, "name"),
        ({"name": "ok", "instruction": "x" * 32769}, "instruction"),
        ({"name": "ok", "instruction": 7}, "instruction"),
    ],
)
def test_create_rejects_invalid_fields(stack: Stack, http: httpx.Client, body: dict[str, Any], param: str) -> None:
    response = http.post("/v1/projects", headers=user(stack), json=body)
    assert_error_envelope(response, 400, type="invalid_request_error", param=param)


@pytest.mark.parametrize("content", [b'{"name": ', b"not json", b'["a list"]', b'"a string"'])
def test_create_rejects_a_body_that_is_not_a_json_object(stack: Stack, http: httpx.Client, content: bytes) -> None:
    headers = {**user(stack), "Content-Type": "application/json"}
    response = http.post("/v1/projects", headers=headers, content=content)
    assert_error_envelope(response, 400, type="invalid_request_error", code="invalid_json")


def test_a_duplicate_name_is_409_for_the_same_user_only(stack: Stack, http: httpx.Client) -> None:
    alice, bob = user(stack), user(stack)
    create(http, alice, "Taxes")
    # Compared after trimming.
    duplicate = http.post("/v1/projects", headers=alice, json={"name": " Taxes "})
    assert_error_envelope(duplicate, 409, type="invalid_request_error", code="project_name_taken", param="name")
    assert create(http, bob, "Taxes")["name"] == "Taxes"
    assert list_projects(http, alice)["total"] == 1


def test_concurrent_creates_of_one_name_make_one_project_and_409s(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)

    def attempt(_: int) -> httpx.Response:
        return httpx.post(f"{stack.base_url}/v1/projects", headers=headers, json={"name": "Race"}, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(attempt, range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [409] * 7, [r.text for r in responses]
    assert list_projects(http, headers)["total"] == 1


# --- list -----------------------------------------------------------------------------------------------------


def test_list_of_a_user_without_projects_is_empty(stack: Stack, http: httpx.Client) -> None:
    page = list_projects(http, user(stack))
    assert page == {"object": "list", "data": [], "has_more": False, "total": 0, "total_count": 0}


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_walks_every_page_with_next_cursor(stack: Stack, http: httpx.Client, prefix: str) -> None:
    headers = user(stack)
    ids = [create(http, headers, f"p{i}")["id"] for i in range(5)]
    newest_first = ids[::-1]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        response = http.get(f"{prefix}/projects", headers=headers, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["object"] == "list"
        assert page["total"] == page["total_count"] == 5
        data_ids = [p["id"] for p in page["data"]]
        assert page["first_id"] == data_ids[0] and page["last_id"] == data_ids[-1]
        seen += data_ids
        if not page["has_more"]:
            assert "next_cursor" not in page
            break
        # The cursor is the public id of the page's last project, never an internal number.
        assert page["next_cursor"] == page["last_id"]
        params = {"limit": 2, "after": page["next_cursor"]}
    assert seen == newest_first


def test_list_pages_exactly_limit_and_after_the_end(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    ids = [create(http, headers, f"p{i}")["id"] for i in range(3)]
    full = list_projects(http, headers, limit=3)
    assert [p["id"] for p in full["data"]] == ids[::-1]
    assert full["has_more"] is False and "next_cursor" not in full
    # After the oldest project (the end of a newest-first list): an empty page that still counts everything.
    end = list_projects(http, headers, after=ids[0])
    assert end == {"object": "list", "data": [], "has_more": False, "total": 3, "total_count": 3}


def test_list_orders_by_creation_in_both_directions_with_cursor_alias(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    ids = [create(http, headers, f"p{i}")["id"] for i in range(4)]
    # Changing a project does not move it, so a walk through the pages never repeats or skips one.
    assert http.patch(f"/v1/projects/{ids[0]}", headers=headers, json={"is_favorite": True}).status_code == 200
    assert [p["id"] for p in list_projects(http, headers)["data"]] == ids[::-1]
    assert [p["id"] for p in list_projects(http, headers, order="asc")["data"]] == ids
    assert [p["id"] for p in list_projects(http, headers, order="asc", cursor=ids[1])["data"]] == ids[2:]
    assert [p["id"] for p in list_projects(http, headers, order="desc", cursor=ids[2])["data"]] == ids[1::-1]


def test_list_with_offset(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    ids = [create(http, headers, f"p{i}")["id"] for i in range(5)]
    page = list_projects(http, headers, limit=2, offset=2)
    assert [p["id"] for p in page["data"]] == [ids[2], ids[1]]
    assert page["has_more"] is True and page["next_cursor"] == ids[1] and page["total"] == 5
    assert list_projects(http, headers, offset=5)["data"] == []


def test_list_defaults_to_20_per_page(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    for i in range(21):
        create(http, headers, f"p{i}")
    page = list_projects(http, headers)
    assert len(page["data"]) == 20 and page["has_more"] is True and page["total"] == 21


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"order": "sideways"}, "order"),
        ({"after": "proj_doesnotexist0000"}, "after"),
        ({"after": "proj_a", "cursor": "proj_b"}, "after"),
    ],
)
def test_list_rejects_invalid_parameters(
    stack: Stack, http: httpx.Client, params: dict[str, Any], param: str
) -> None:
    response = http.get("/v1/projects", headers=user(stack), params=params)
    assert_error_envelope(response, 400, type="invalid_request_error", param=param)


# --- update ---------------------------------------------------------------------------------------------------


def test_update_changes_only_the_named_fields(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    project = create(http, headers, "Draft", instruction="Be terse.")
    time.sleep(1.1)  # updated_at has one-second resolution
    response = http.patch(f"/v1/projects/{project['id']}", headers=headers, json={"name": "  Final  "})
    assert response.status_code == 200, response.text
    updated = response.json()
    assert updated["name"] == "Final" and updated["instruction"] == "Be terse."
    assert updated["created_at"] == project["created_at"] and updated["updated_at"] > project["updated_at"]
    assert http.get(f"/llm/v1/projects/{project['id']}", headers=headers).json() == updated

    unchanged = http.patch(f"/llm/v1/projects/{project['id']}", headers=headers, json={})
    assert unchanged.status_code == 200 and unchanged.json() == updated


@pytest.mark.parametrize("cleared", [None, ""])
def test_update_sets_and_clears_the_instruction(stack: Stack, http: httpx.Client, cleared: str | None) -> None:
    headers = user(stack)
    url = f"/v1/projects/{create(http, headers, 'Docs')['id']}"
    assert http.patch(url, headers=headers, json={"instruction": "Cite sources."}).json()["instruction"] == (
        "Cite sources."
    )
    response = http.patch(url, headers=headers, json={"instruction": cleared})
    assert response.status_code == 200 and "instruction" not in response.json()


def test_favorite_and_archive(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    url = f"/v1/projects/{create(http, headers, 'Old stuff')['id']}"
    assert http.patch(url, headers=headers, json={"is_favorite": True}).json()["is_favorite"] is True

    before = int(time.time())
    archived = http.patch(url, headers=headers, json={"is_archived": True}).json()
    assert archived["is_archived"] is True and archived["is_favorite"] is True
    assert before <= archived["archived_at"] <= time.time() + 1
    time.sleep(1.1)
    # Archiving again keeps the first archive time.
    assert http.patch(url, headers=headers, json={"is_archived": True}).json()["archived_at"] == archived["archived_at"]
    # Archived projects are still listed.
    assert list_projects(http, headers)["data"][0]["is_archived"] is True

    restored = http.patch(url, headers=headers, json={"is_archived": False, "is_favorite": False}).json()
    assert restored["is_archived"] is False and restored["is_favorite"] is False
    assert "archived_at" not in restored


def test_renaming_onto_another_projects_name_is_409(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    create(http, headers, "Taken")
    project = create(http, headers, "Mine")
    url = f"/v1/projects/{project['id']}"
    response = http.patch(url, headers=headers, json={"name": "Taken"})
    assert_error_envelope(response, 409, type="invalid_request_error", code="project_name_taken", param="name")
    assert http.get(url, headers=headers).json()["name"] == "Mine"
    # Its own name is no conflict.
    assert http.patch(url, headers=headers, json={"name": "Mine"}).status_code == 200


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 121}, "name"),
        ({"name": "tab\there"}, "name"),
        ({"name": 1}, "name"),
        ({"instruction": "x" * 32769}, "instruction"),
        ({"instruction": ["x"]}, "instruction"),
        ({"is_favorite": "yes"}, "is_favorite"),
        ({"is_archived": 1}, "is_archived"),
    ],
)
def test_update_rejects_invalid_fields(stack: Stack, http: httpx.Client, body: dict[str, Any], param: str) -> None:
    headers = user(stack)
    url = f"/v1/projects/{create(http, headers, 'Stable')['id']}"
    assert_error_envelope(http.patch(url, headers=headers, json=body), 400, type="invalid_request_error", param=param)
    assert http.get(url, headers=headers).json()["name"] == "Stable"


def test_update_rejects_malformed_json(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    url = f"/v1/projects/{create(http, headers, 'Stable')['id']}"
    response = http.patch(url, headers={**headers, "Content-Type": "application/json"}, content=b"{oops")
    assert_error_envelope(response, 400, type="invalid_request_error", code="invalid_json")


# --- delete, ids, isolation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", PREFIXES)
def test_delete_removes_the_project_and_frees_its_name(stack: Stack, http: httpx.Client, prefix: str) -> None:
    headers = user(stack)
    project = create(http, headers, "Gone")
    url = f"{prefix}/projects/{project['id']}"
    response = http.delete(url, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"id": project["id"], "object": "project.deleted", "deleted": True}
    assert_error_envelope(http.get(url, headers=headers), 404, type="not_found_error", code="not_found")
    assert_error_envelope(http.delete(url, headers=headers), 404, type="not_found_error")
    assert list_projects(http, headers)["total"] == 0
    assert create(http, headers, "Gone")["id"] != project["id"]


@pytest.mark.parametrize("project_id", ["proj_ABC", "conv_abc123", "proj_", "proj_a-b", "12"])
@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_a_malformed_id_is_400(stack: Stack, http: httpx.Client, method: str, project_id: str) -> None:
    response = http.request(method, f"/v1/projects/{project_id}", headers=user(stack),
                            json={} if method == "PATCH" else None)
    assert_error_envelope(response, 400, type="invalid_request_error", param="project_id")


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_an_unknown_id_is_404(stack: Stack, http: httpx.Client, method: str) -> None:
    response = http.request(method, "/v1/projects/proj_0000000000000000", headers=user(stack),
                            json={"name": "x"} if method == "PATCH" else None)
    assert_error_envelope(response, 404, type="not_found_error", code="not_found", param="project_id")


def test_another_users_project_is_404_and_never_listed(stack: Stack, http: httpx.Client) -> None:
    alice, mallory = user(stack), user(stack)
    project = create(http, alice, "Private", instruction="secret")
    url = f"/v1/projects/{project['id']}"
    assert_error_envelope(http.get(url, headers=mallory), 404, type="not_found_error")
    assert_error_envelope(http.patch(url, headers=mallory, json={"name": "Mine now"}), 404, type="not_found_error")
    assert_error_envelope(http.delete(url, headers=mallory), 404, type="not_found_error")
    assert list_projects(http, mallory)["data"] == []
    # Nor can another user's id serve as a cursor.
    response = http.get("/v1/projects", headers=mallory, params={"after": project["id"]})
    assert_error_envelope(response, 400, type="invalid_request_error", param="after")
    assert http.get(url, headers=alice).json() == project


def test_projects_need_authentication(http: httpx.Client) -> None:
    assert_error_envelope(http.get("/v1/projects"), 401, type="auth_error")
    assert_error_envelope(http.post("/v1/projects", json={"name": "x"}), 401, type="auth_error")


def test_deleting_a_project_detaches_its_conversations(stack: Stack, http: httpx.Client) -> None:
    headers = user(stack)
    project = create(http, headers, "Holder")
    created = http.post("/v1/conversations", headers=headers, json={"title": "Kept", "project_id": project["id"]})
    assert created.status_code == 200, created.text
    conversation = created.json()
    assert conversation["project_id"] == project["id"]

    assert http.delete(f"/v1/projects/{project['id']}", headers=headers).status_code == 200
    kept = http.get(f"/v1/conversations/{conversation['id']}", headers=headers)
    assert kept.status_code == 200, kept.text
    assert kept.json()["title"] == "Kept"
    assert kept.json().get("project_id") is None
