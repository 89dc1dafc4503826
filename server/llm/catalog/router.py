"""Which backend serves a requested model: JAN_MODELS and the catalog admins manage, read into memory.

Routing is on the hot path of every chat completion, so it reads a snapshot, never the database: the catalog is
reread after every change made on this replica and every `catalog_refresh_seconds` (changes made on another
replica). A request names a model id or an alias of one. Among models with the same id, those of JAN_MODELS come
first, then providers' in the order they were registered. Disabled models and those of disabled providers are
invisible (404), as if they did not exist.

Each provider gets one OpenAIUpstream (its connection pool), shared by its models' backends; the upstream is kept
across snapshots while the provider's address and key stay the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.core.config import ModelSettings
from server.core.errors import model_not_found
from server.core.ids import new_id
from server.llm.backends.base import InferenceBackend
from server.llm.backends.openai_upstream import OpenAIUpstream, OpenAIUpstreamBackend, UpstreamConfig
from server.llm.catalog import store
from server.llm.catalog.provider_keys import ProviderKeyCipher
from server.llm.catalog.store import SETTINGS_PROVIDER_ID, Provider, ProviderModel
from server.llm.models import ModelRegistry

log = logging.getLogger(__name__)

SETTINGS_PROVIDER_NAME = "JAN_MODELS"
# Streams still running on an upstream whose provider changed get this long before its connections close.
RETIRED_UPSTREAM_GRACE_SECONDS = 300.0


@dataclass(frozen=True)
class Route:
    """A model a request may name, the backend that serves it, and what the catalog says about it."""

    model_id: str
    backend: InferenceBackend
    provider_id: str
    provider_vendor: str
    provider_name: str
    created: int
    default_params: dict[str, Any] = field(default_factory=dict)
    max_output_tokens: int | None = None
    embeddings: bool = False

    @property
    def owned_by(self) -> str:
        return self.backend.info.owned_by


@dataclass(frozen=True)
class _Snapshot:
    routes: list[Route]  # every active model, in routing priority
    by_id: dict[str, Route]  # the first of each id
    aliases: dict[str, str]
    providers: list[Provider]


class ModelRouter:
    def __init__(
        self,
        registry: ModelRegistry,
        settings_models: list[ModelSettings],
        sessions: async_sessionmaker[AsyncSession],
        cipher: ProviderKeyCipher,
        refresh_seconds: float,
    ) -> None:
        self._registry = registry
        self._settings_models = {model.id: model for model in settings_models}
        self._sessions = sessions
        self._cipher = cipher
        self._refresh_seconds = refresh_seconds
        self._snapshot = _Snapshot([], {}, {}, [])
        # Provider id -> (its address and key, its upstream).
        self._upstreams: dict[str, tuple[UpstreamConfig, OpenAIUpstream]] = {}
        self._refresh_lock = asyncio.Lock()
        self._refreshing: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._seed_settings_models()
        await self.refresh()
        self._refreshing = asyncio.create_task(self._refresh_periodically())

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*(upstream.close() for _, upstream in self._upstreams.values()))

    def route(self, model_id: str) -> Route:
        """The route of a model id or alias; 404 for anything unknown or disabled, 503 for a settings model that
        failed to load."""
        snapshot = self._snapshot
        found = snapshot.by_id.get(model_id)
        if found is None and model_id in snapshot.aliases:
            found = snapshot.by_id.get(snapshot.aliases[model_id])
        if found is None:
            raise model_not_found(model_id)
        if found.provider_id == SETTINGS_PROVIDER_ID:
            self._registry.get(found.model_id)
        return found

    def knows(self, model_id: str) -> bool:
        """Whether the id or alias names an active model."""
        snapshot = self._snapshot
        return model_id in snapshot.by_id or snapshot.aliases.get(model_id, "") in snapshot.by_id

    def listed(self, *, every_provider: bool = False) -> list[tuple[str, Route]]:
        """(id, route) of what `GET /v1/models` lists: each model once (or once per provider serving it), then
        the aliases."""
        snapshot = self._snapshot
        models = snapshot.routes if every_provider else list(snapshot.by_id.values())
        listed = [(route.model_id, route) for route in models]
        listed += [
            (alias, snapshot.by_id[target])
            for alias, target in sorted(snapshot.aliases.items())
            if target in snapshot.by_id and alias not in snapshot.by_id
        ]
        return listed

    def active_providers(self) -> list[dict[str, Any]]:
        """`GET /v1/models/providers`: the JAN_MODELS pseudo-provider, then every active provider."""
        listed: list[dict[str, Any]] = [
            {"id": SETTINGS_PROVIDER_ID, "name": SETTINGS_PROVIDER_NAME, "vendor": "jan", "base_url": None,
             "active": True, "metadata": {}},
        ]
        listed += [
            {"id": p.id, "name": p.name, "vendor": p.vendor, "base_url": p.base_url, "active": p.active,
             "metadata": p.metadata_}
            for p in self._snapshot.providers if p.active
        ]
        return listed

    def readiness_problem(self) -> str | None:
        return self._registry.readiness_problem()

    async def refresh(self) -> None:
        async with self._refresh_lock:
            async with self._sessions() as session:
                providers = await store.list_providers(session)
                models = await store.list_models(session)
                aliases = {alias.alias: alias.model_id for alias in await store.list_aliases(session)}
            upstreams = await self._upstreams_for(providers)
            by_provider = {provider.id: provider for provider in providers}
            routes: list[Route] = []
            # JAN_MODELS first, then providers in registration order (list_models is in row order).
            for row in sorted(models, key=lambda m: m.provider_id != SETTINGS_PROVIDER_ID):
                route = self._route_of(row, by_provider, upstreams)
                if route is not None:
                    routes.append(route)
            by_id: dict[str, Route] = {}
            for route in routes:
                by_id.setdefault(route.model_id, route)
            self._snapshot = _Snapshot(routes, by_id, aliases, providers)

    def _route_of(
        self, row: ProviderModel, providers: dict[str, Provider], upstreams: dict[str, OpenAIUpstream]
    ) -> Route | None:
        if not row.active:
            return None
        created = int(row.created_at.timestamp())
        if row.provider_id == SETTINGS_PROVIDER_ID:
            settings = self._settings_models.get(row.upstream_model)
            if settings is None:
                return None
            backend = self._registry.backend(settings.id)
            return Route(
                model_id=settings.id, backend=backend, provider_id=SETTINGS_PROVIDER_ID,
                provider_vendor=settings.backend, provider_name=SETTINGS_PROVIDER_NAME,
                created=backend.info.created or created, default_params=row.default_params,
            )
        provider = providers.get(row.provider_id)
        if provider is None or not provider.active:
            return None
        model_settings = ModelSettings(
            id=row.model_id,
            backend="openai",
            owned_by=provider.name,
            base_url=provider.base_url,
            upstream_model=row.upstream_model,
            context_size=max(row.context_length or 2048, 128),
            vision=row.vision,
            image_input="url",
            tools=row.tools,
            # llama.cpp's server enforces only its own form of a JSON-schema response_format.
            json_schema_format=(
                "json_object_schema" if provider.metadata_.get("json_schema_format") == "json_object_schema"
                else "json_schema"
            ),
        )
        return Route(
            model_id=row.model_id, backend=OpenAIUpstreamBackend(model_settings, upstreams[provider.id]),
            provider_id=provider.id, provider_vendor=provider.vendor, provider_name=provider.name, created=created,
            default_params=row.default_params, max_output_tokens=row.max_output_tokens, embeddings=row.embeddings,
        )

    async def _upstreams_for(self, providers: list[Provider]) -> dict[str, OpenAIUpstream]:
        """One started upstream per provider: kept while its address and key are unchanged, replaced otherwise;
        a replaced or deleted provider's is closed after a grace period for the streams still on it."""
        wanted: dict[str, UpstreamConfig] = {}
        for provider in providers:
            api_key = ""
            if provider.api_key_encrypted:
                api_key = self._cipher.decrypt(provider.api_key_encrypted, provider.id) or ""
            wanted[provider.id] = UpstreamConfig(name=f"provider {provider.name}", base_url=provider.base_url,
                                                 api_key=api_key)
        for provider_id, (config, upstream) in list(self._upstreams.items()):
            if wanted.get(provider_id) != config:
                del self._upstreams[provider_id]
                self._retire(upstream)
        for provider_id, config in wanted.items():
            if provider_id not in self._upstreams:
                upstream = OpenAIUpstream(config)
                await upstream.start()
                self._upstreams[provider_id] = (config, upstream)
        return {provider_id: upstream for provider_id, (_, upstream) in self._upstreams.items()}

    def _retire(self, upstream: OpenAIUpstream) -> None:
        async def close_later() -> None:
            await asyncio.sleep(RETIRED_UPSTREAM_GRACE_SECONDS)
            await upstream.close()

        task = asyncio.create_task(close_later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.refresh()
            except Exception:
                # A database hiccup keeps the last snapshot; the next round tries again.
                log.exception("rereading the model catalog failed")

    async def _seed_settings_models(self) -> None:
        """One catalog row per JAN_MODELS entry, so admins can enable, disable and tune it. The settings stay the
        source of its capabilities; rows of models no longer configured go."""
        async with self._sessions.begin() as session:
            rows = {row.upstream_model: row for row in await store.list_models(session, SETTINGS_PROVIDER_ID)}
            for model_id, row in rows.items():
                if model_id not in self._settings_models:
                    await session.delete(row)
            for settings in self._settings_models.values():
                if settings.id in rows:
                    _apply_settings(rows[settings.id], settings)
        for settings in self._settings_models.values():
            if settings.id in rows:
                continue
            # Another replica may seed the same row at the same moment: the unique constraint keeps one.
            with contextlib.suppress(IntegrityError):
                async with self._sessions.begin() as session:
                    new_row = ProviderModel(
                        id=new_id("pmdl"), provider_id=SETTINGS_PROVIDER_ID, model_id=settings.id,
                        upstream_model=settings.id, display_name=settings.id, active=True, listed=True,
                        default_params={},
                    )
                    _apply_settings(new_row, settings)
                    session.add(new_row)


def _apply_settings(row: ProviderModel, settings: ModelSettings) -> None:
    row.vision = settings.vision
    row.tools = settings.tools
    row.embeddings = False
    row.context_length = settings.context_size
    row.max_output_tokens = None
