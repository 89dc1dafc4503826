"""Build step: generate the Python stubs and Envoy's descriptor set from proto/.

    python -m server.protogen

Outputs (git-ignored, never edited): `server/gen/` (Python modules, importable as `server.gen.jan...`) and
`server/gen/jan.pb` (the descriptor set Envoy's transcoder loads). Only `proto/jan/` is compiled to Python: the
vendored `proto/google/api` files are imported from googleapis-common-protos at run time.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from server.core.progress import step

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "server" / "gen"
DESCRIPTOR_SET = GEN_DIR / "jan.pb"


def proto_files() -> list[Path]:
    return sorted((PROTO_DIR / "jan").rglob("*.proto"))


def is_stale() -> bool:
    if not DESCRIPTOR_SET.exists():
        return True
    built = DESCRIPTOR_SET.stat().st_mtime
    return any(p.stat().st_mtime > built for p in proto_files())


def generate() -> None:
    from grpc_tools import protoc

    protobuf_include = Path(protoc.__file__).parent / "_proto"
    shutil.rmtree(GEN_DIR, ignore_errors=True)
    GEN_DIR.mkdir(parents=True)
    sources = [str(p.relative_to(PROTO_DIR)) for p in proto_files()]
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{protobuf_include}",
        f"--python_out={GEN_DIR}",
        f"--pyi_out={GEN_DIR}",
        f"--grpc_python_out={GEN_DIR}",
        f"--descriptor_set_out={DESCRIPTOR_SET}",
        "--include_imports",
        "--include_source_info",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    _make_importable(GEN_DIR)


def _make_importable(gen: Path) -> None:
    """protoc writes `from jan.llm.v1 import x_pb2`; point those imports at `server.gen.jan`."""
    for folder in [gen, *(p for p in gen.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    pattern = re.compile(r"^from jan(\.[\w.]+)? import", re.MULTILINE)
    for module in gen.rglob("*.py*"):
        text = module.read_text()
        fixed = pattern.sub(lambda m: f"from server.gen.jan{m.group(1) or ''} import", text)
        if fixed != text:
            module.write_text(fixed)


def service_names(descriptor_set: Path = DESCRIPTOR_SET) -> list[str]:
    """Full names of the jan.* services in a descriptor set: what Envoy transcodes and the server registers."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    return sorted(f"{f.package}.{s.name}" for f in files if f.package.startswith("jan.") for s in f.service)


def ensure_generated() -> None:
    if is_stale():
        with step("Generating the gRPC stubs and Envoy's descriptor set from proto/"):
            generate()


if __name__ == "__main__":
    generate()
    print(f"generated {len(proto_files())} proto files into {GEN_DIR.relative_to(ROOT)}", file=sys.stderr)
