"""The API docs through the gateway: `/openapi.json` (valid, every endpoint of the README, its security what Envoy
does) and the `/docs` page in a real headless Chromium, used as a person would: authorize, try GET /v1/models."""

from __future__ import annotations

import re
import shutil
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from playwright.sync_api import expect, sync_playwright

from tests.e2e.conftest import assert_error_envelope, guest_login
from tests.support.stack import ROOT, Stack

# The docs do not depend on the database: one stack is enough for the browser.
ONE_STACK = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)


def openapi(http: httpx.Client) -> dict[str, Any]:
    response = http.get("/openapi.json")  # no credential: the docs are public
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def readme_endpoint_paths() -> set[str]:
    """Every path the README's Endpoints table names (aliases too), with `{param}` names blanked out."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Endpoints\n", 1)[1].strip().split("\n\n", 1)[0]
    paths = re.findall(r"`(?:[A-Z]+ )?(/[^`\s?]+)", table)  # `/` alone is prose (ids may contain `/`)
    return {_shape(path) for path in paths if "..." not in path and "…" not in path}


def _shape(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_openapi_json_is_valid_and_lists_every_endpoint_of_the_readme(http: httpx.Client) -> None:
    document = openapi(http)
    validate(document)
    listed = {_shape(path) for path in document["paths"]}
    assert readme_endpoint_paths() - listed == set()
    for method, path in [("get", "/v1/models"), ("post", "/v1/chat/completions"), ("post", "/v1/responses"),
                         ("post", "/v1/media"), ("post", "/v1/mcp"), ("get", "/v1/admin/providers"),
                         ("get", "/openapi.json"), ("get", "/docs")]:
        assert method in document["paths"][path], (method, path)


def test_every_operation_that_needs_a_credential_is_refused_without_one(http: httpx.Client) -> None:
    """The document's `security` is what the gateway does: 401 with OpenAI's envelope, whatever the route."""
    protected = [(verb, path) for path, ops in openapi(http)["paths"].items() for verb, op in ops.items()
                 if op.get("security") != []]
    assert len(protected) > 80
    for verb, path in protected:
        url = re.sub(r"\{\w+\}", "x", path)
        response = http.request(verb.upper(), url, json={} if verb in ("post", "put", "patch") else None)
        assert_error_envelope(response, 401, type="auth_error")


def test_the_docs_page_and_its_files_are_served_without_a_credential(http: httpx.Client) -> None:
    page = http.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'url: "/openapi.json"' in page.text
    # Every script and style comes from the gateway itself.
    assert all(link.startswith("/docs/") for link in re.findall(r'(?:src|href)="([^"]+)"', page.text))
    for name, content_type in [("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css")]:
        asset = http.get(f"/docs/{name}")
        assert asset.status_code == 200 and content_type in asset.headers["content-type"], name
    assert_error_envelope(http.get("/docs/no-such-file.js"), 404, type="not_found_error")


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does it)")
    return path


@ONE_STACK
def test_try_it_out_on_get_models_in_the_docs_page_answers_200(stack: Stack) -> None:
    token = guest_login(stack)["access_token"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        try:
            page = browser.new_page()
            requests_elsewhere: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(stack.base_url) else requests_elsewhere.append(
                r.url))
            page.goto(f"{stack.base_url}/docs")

            # The endpoints are listed by service. Swagger UI renders only the part of the list in view: the filter
            # box (by service) brings each into view, as a reader would.
            expect(page.locator(".opblock-tag").first).to_be_visible(timeout=30_000)
            search = page.locator(".operation-filter-input")
            for service, path in [("LlmService", "/v1/models"), ("LlmService", "/v1/chat/completions"),
                                  ("ResponseService", "/v1/responses"), ("MediaService", "/v1/media"),
                                  ("McpService", "/v1/mcp"), ("ModelCatalogService", "/v1/admin/providers")]:
                search.fill(service)
                expect(page.locator(f'.opblock-summary-path[data-path="{path}"]').first).to_be_visible()
            search.fill("LlmService")
            models = page.locator("#operations-LlmService-LlmService_ListModels")

            # Authorize with the guest's access token (the bearer JWT scheme).
            page.locator("button.authorize").first.click()
            bearer = page.locator(".auth-container").filter(has_text="bearerAuth")
            bearer.locator("input").fill(token)
            bearer.locator("button.authorize").click()
            page.locator("button.btn-done").first.click()

            # GET /v1/models: "Try it out" is on already; Execute sends the token and shows the server's 200.
            models.locator(".opblock-summary").click()
            models.locator("button.execute").click()
            status = models.locator(".live-responses-table .response .response-col_status").first
            expect(status).to_have_text("200", timeout=30_000)
            expect(models.locator(".live-responses-table")).to_contain_text("smollm2-135m-instruct")
            assert requests_elsewhere == []  # nothing from a CDN
        finally:
            browser.close()
