"""Build step: generate the Python stubs and Envoy's descriptor set from proto/.

    python -m server.protogen

Outputs (git-ignored, never edited): `server/gen/` (Python modules, importable as `server.gen.jan...`),
`server/gen/jan.pb` (the descriptor set Envoy's transcoder loads, with the proto comments), `server/gen/openapi.json`
(the REST API's OpenAPI document, built from that descriptor set by `server.openapi.generate`) and
`server/gen/docs/` (the /docs page: Swagger UI's files from `docs/ui/node_modules`, which `make setup` installs).
Only `proto/jan/` is compiled to Python: the vendored `proto/google/api` files are imported from
googleapis-common-protos at run time.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from server.core.observability.progress import step

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
GEN_DIR = ROOT / "server" / "gen"
DESCRIPTOR_SET = GEN_DIR / "jan.pb"
# The REST API's OpenAPI document and the docs page that shows it (served at /openapi.json and /docs).
OPENAPI_DOCUMENT = GEN_DIR / "openapi.json"
DOCS_DIR = GEN_DIR / "docs"
DOCS_UI_DIR = ROOT / "docs" / "ui"
# What the page needs of swagger-ui-dist (the rest of the package is other builds and source maps).
SWAGGER_UI_FILES = ("swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png", "LICENSE")


def proto_files() -> list[Path]:
    return sorted((PROTO_DIR / "jan").rglob("*.proto"))


def openapi_sources() -> list[Path]:
    """The hand-written OpenAPI parts kept next to the protos (server/openapi/overrides.py)."""
    return sorted((PROTO_DIR / "jan").rglob("openapi/*.json"))


def is_stale() -> bool:
    if not DESCRIPTOR_SET.exists() or not OPENAPI_DOCUMENT.exists():
        return True
    built = DESCRIPTOR_SET.stat().st_mtime
    return any(p.stat().st_mtime > built for p in [*proto_files(), *openapi_sources()])


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
    from server.openapi.generate import write_document

    write_document(DESCRIPTOR_SET, PROTO_DIR, OPENAPI_DOCUMENT)
    _copy_docs_page()


def _copy_docs_page() -> None:
    """Swagger UI's files, fetched from npm at setup time (`make setup`), so /docs needs no CDN when viewed."""
    dist = DOCS_UI_DIR / "node_modules" / "swagger-ui-dist"
    if not dist.is_dir():
        print(f"warning: {dist.relative_to(ROOT)} is missing, so /docs will answer 404: run `make setup`",
              file=sys.stderr)
        return
    DOCS_DIR.mkdir()
    shutil.copy(DOCS_UI_DIR / "index.html", DOCS_DIR / "index.html")
    for name in SWAGGER_UI_FILES:
        shutil.copy(dist / name, DOCS_DIR / name)


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
