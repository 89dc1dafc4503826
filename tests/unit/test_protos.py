"""The protos are the API: they must pass buf lint, stay compatible with main, and bind every REST path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from server.protogen import DESCRIPTOR_SET, ROOT

BUF = str(Path(sys.executable).parent / "buf")


def _buf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([BUF, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_buf_lint_passes() -> None:
    result = _buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_breaking_change_against_main() -> None:
    result = _buf("breaking", "--against", ".git#branch=main")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rpc_has_an_http_binding() -> None:
    descriptors = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    methods = [
        (f"{file.package}.{service.name}", method)
        for file in descriptors.file
        if file.package.startswith("jan.")
        for service in file.service
        for method in service.method
    ]
    assert methods
    unbound = [f"{service}/{m.name}" for service, m in methods if not m.options.HasExtension(annotations_pb2.http)]
    assert unbound == []
