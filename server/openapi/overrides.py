"""Hand-written parts of the OpenAPI document, kept next to the protos they describe.

`proto/jan/<area>/v1/openapi/*.json` hold what a descriptor cannot say: the JSON of `google.api.HttpBody` requests
and responses (OpenAI's wire format, passed through raw), and success statuses other than 200 that a servicer sets
with `send_http_status`. Each file is

    {"schemas": {"ChatCompletion": {...}},                 ← added to components.schemas
     "operations": {"LlmService_CreateChatCompletion": {   ← by the RPC's primary operationId; applies to aliases too
        "status": 201,                                     ← the success status (204 and 302 have no body)
        "requestBody": {...}, "responses": {"200": {...}}  ← replace the generated ones (responses per status)
     }}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Statuses whose response has no body to describe.
_NO_CONTENT = {204, 302}


@dataclass
class Overrides:
    schemas: dict[str, Any] = field(default_factory=dict)
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)

    def apply(self, operation_id: str, operation: dict[str, Any]) -> None:
        """Changes a generated operation (the RPC's binding or one of its aliases) in place."""
        override = self.operations.get(operation_id)
        if override is None:
            return
        self.applied.add(operation_id)
        responses = operation["responses"]
        if status := override.get("status"):
            success = responses.pop("200")
            if status in _NO_CONTENT:
                success.pop("content", None)
            responses[str(status)] = success
        for key, value in override.items():
            if key == "responses":
                responses.update(value)
            elif key != "status":
                operation[key] = value

    def check_all_applied(self) -> None:
        """An override naming no RPC is a typo or a renamed RPC: fail the build rather than drop it silently."""
        if unused := sorted(set(self.operations) - self.applied):
            raise ValueError(f"OpenAPI overrides for unknown operations: {', '.join(unused)}")


def load_overrides(proto_dir: Path) -> Overrides:
    overrides = Overrides()
    for path in sorted(proto_dir.rglob("openapi/*.json")):
        content = json.loads(path.read_text())
        for name, schema in content.get("schemas", {}).items():
            if name in overrides.schemas:
                raise ValueError(f"{path}: schema {name} is defined twice")
            overrides.schemas[name] = schema
        for operation_id, operation in content.get("operations", {}).items():
            if operation_id in overrides.operations:
                raise ValueError(f"{path}: operation {operation_id} is overridden twice")
            overrides.operations[operation_id] = operation
    return overrides
