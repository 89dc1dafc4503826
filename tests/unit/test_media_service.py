"""The media service on a real database (SQLite and PostgreSQL) and local storage: the retention sweep (the
periodic task, with a retention of under a second), shared bytes outliving one owner, and resolve_placeholders,
the contract the chat path calls."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth.store import User
from server.core.config import Settings
from server.core.db import utcnow
from server.core.errors import ApiError
from server.media.service import MediaService
from server.media.storage import S3Storage
from server.media.store import Media
from tests.support.media_images import data_url, unique_png
from tests.support.ports import free_port


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "data", **values)  # type: ignore[call-arg]


async def _user(sessions: async_sessionmaker[AsyncSession], name: str) -> str:
    async with sessions.begin() as session:
        user = User(username=name, is_guest=True)
        session.add(user)
    return user.id


async def _upload(media: MediaService, user_id: str, data: bytes) -> Media:
    body = json.dumps({"source": {"type": "data_url", "data_url": data_url(data)}}).encode()
    return (await media.upload(user_id, body, "application/json")).media


@pytest.fixture
async def media(tmp_path: Path, sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[MediaService]:
    service = MediaService(_settings(tmp_path), sessions)
    await service.start()
    yield service
    await service.stop()


def _stored_files(tmp_path: Path) -> list[str]:
    root = tmp_path / "data" / "media"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_the_periodic_sweep_deletes_expired_media_and_their_bytes(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession]
) -> None:
    service = MediaService(_settings(tmp_path, media_retention_days=1 / 86400, media_sweep_interval_seconds=0.2),
                           sessions)
    await service.start()
    try:
        user_id = await _user(sessions, "sweep-user")
        row = await _upload(service, user_id, unique_png())
        assert _stored_files(tmp_path) == [f"images/{row.sha256}.png"]
        for _ in range(50):
            await asyncio.sleep(0.1)
            async with sessions() as session:
                if await session.scalar(select(Media).where(Media.id == row.id)) is None:
                    break
        else:
            pytest.fail("the sweep did not delete the expired media")
        assert _stored_files(tmp_path) == []
    finally:
        await service.stop()


async def test_bytes_shared_with_another_user_survive_the_sweep(
    tmp_path: Path, sessions: async_sessionmaker[AsyncSession], media: MediaService
) -> None:
    alice, bob = await _user(sessions, "alice"), await _user(sessions, "bob")
    data = unique_png()
    old, kept = await _upload(media, alice, data), await _upload(media, bob, data)
    assert old.id != kept.id and old.storage_key == kept.storage_key
    async with sessions.begin() as session:
        await session.execute(update(Media).where(Media.id == old.id).values(expires_at=utcnow() - timedelta(1)))
    assert await media.sweep_once() == 1
    assert _stored_files(tmp_path) == [kept.storage_key]
    assert b"".join([chunk async for chunk in media.content(kept)]) == data
    # An abandoned prepare-upload goes too, with what was put for it.
    row, _, _ = await media.prepare_upload(bob, b'{"mime_type": "image/png"}')
    await media.storage.put(row.storage_key, data, "image/png")
    async with sessions.begin() as session:
        await session.execute(update(Media).where(Media.id == row.id).values(expires_at=utcnow() - timedelta(1)))
    assert await media.sweep_once() == 1
    assert _stored_files(tmp_path) == [kept.storage_key]


async def test_resolve_placeholders_replaces_them_in_any_string(
    sessions: async_sessionmaker[AsyncSession], media: MediaService
) -> None:
    user_id = await _user(sessions, "resolver")
    data = unique_png()
    row = await _upload(media, user_id, data)
    messages = [{"role": "user", "content": [
        {"type": "text", "text": f"what is in data:image/png;{row.id}?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;{row.id}"}},
    ]}]
    as_data = await media.resolve_placeholders(user_id, {"messages": messages}, as_data_url=True)
    expected = "data:image/png;base64," + base64.b64encode(data).decode()
    assert as_data["messages"][0]["content"][1]["image_url"]["url"] == expected
    assert as_data["messages"][0]["content"][0]["text"] == f"what is in {expected}?"
    as_urls = await media.resolve_placeholders(user_id, messages, False)  # positional, as a Callable resolver
    assert as_urls[0]["content"][1]["image_url"]["url"].startswith("http://")
    assert messages[0]["content"][1]["image_url"]["url"] == f"data:image/png;{row.id}"  # the input is unchanged
    unchanged = {"a": [1, None, "data:image/png;base64,AAAA"]}
    assert await media.resolve_placeholders(user_id, unchanged) is unchanged


async def test_resolve_placeholders_names_a_foreign_id(
    sessions: async_sessionmaker[AsyncSession], media: MediaService
) -> None:
    owner, other = await _user(sessions, "owner"), await _user(sessions, "other")
    row = await _upload(media, owner, unique_png())
    with pytest.raises(ApiError) as caught:
        await media.resolve_placeholders(other, {"messages": [{"content": [{"image_url": {
            "url": f"data:image/png;{row.id}"}}]}]})
    assert caught.value.status == 400
    assert caught.value.message == f"unknown media id {row.id}"
    assert caught.value.param == "messages[0].content[0].image_url.url"


async def test_an_unreachable_s3_is_a_503_not_a_500(tmp_path: Path) -> None:
    storage = S3Storage(_settings(tmp_path, media_storage="s3", media_s3_bucket="b", media_s3_access_key="k",
                                  media_s3_secret_key="s", media_s3_endpoint=f"http://127.0.0.1:{free_port()}"))
    await storage.start()
    try:
        for call in (storage.size("images/x.png"), storage.put("images/x.png", b"x", "image/png")):
            with pytest.raises(ApiError) as caught:
                await call
            assert (caught.value.status, caught.value.code) == (503, "storage_unavailable")
    finally:
        await storage.close()
