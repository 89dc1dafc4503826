"""`jan-server keys` and `jan-server doctor` as an operator runs them, against a running stack's settings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

import httpx

from tests.e2e.conftest import guest_login
from tests.support.stack import ROOT, Stack

KEY = re.compile(r"^sk_live_[0-9a-f]{48}$", re.MULTILINE)


def jan_server(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_keys_are_created_listed_and_revoked_from_the_host(stack: Stack, http: httpx.Client) -> None:
    user_id = guest_login(stack)["user_id"]
    created = jan_server(stack.env, "keys", "create", "--user", user_id, "--name", "ci", "--expires-in-days", "7")
    assert created.returncode == 0, created.stderr
    key = KEY.search(created.stdout)
    assert key is not None
    assert http.get("/v1/models", headers={"X-API-Key": key.group(0)}).status_code == 200

    listed = jan_server(stack.env, "keys", "list", "--user", user_id)
    assert listed.returncode == 0 and "active" in listed.stdout and " ci" in listed.stdout
    assert key.group(0) not in listed.stdout
    key_id = listed.stdout.split()[0]

    revoked = jan_server(stack.env, "keys", "revoke", "--user", user_id, key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in jan_server(stack.env, "keys", "list", "--user", user_id).stdout
    deadline = time.monotonic() + 10
    while http.get("/v1/models", headers={"X-API-Key": key.group(0)}).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.5)

    unknown = jan_server(stack.env, "keys", "list", "--user", "nobody@example.com")
    assert unknown.returncode == 2 and "no user" in unknown.stderr


def test_doctor_passes_on_a_fresh_machine_and_names_what_is_wrong(stack: Stack) -> None:
    with tempfile.TemporaryDirectory() as data_dir:
        fresh = {**os.environ, "JAN_DATA_DIR": data_dir, "JAN_PORT": "0", "JAN_GRPC_PORT": "0",
                 "JAN_ENVOY_ADMIN_PORT": "0"}
        fresh.pop("JAN_DATABASE_URL", None)
        healthy = jan_server(fresh, "doctor")
        assert healthy.returncode == 0, healthy.stdout
        assert "✓ Envoy binary" in healthy.stdout and "All checks passed." in healthy.stdout

    # The stack holds its ports, and a model file is missing.
    broken = {**stack.env, "JAN_MODELS": '[{"id": "gone", "path": "/nonexistent/model.gguf"}]'}
    result = jan_server(broken, "doctor")
    assert result.returncode == 1
    assert f"✗ gateway port (JAN_PORT): 127.0.0.1:{stack.env['JAN_PORT']} is in use" in result.stdout
    assert "✗ model gone: GGUF not found: /nonexistent/model.gguf" in result.stdout
    assert "fix: " in result.stdout and "✓ database: reachable" in result.stdout
