"""Chunking and the vector stores (sqlite-vec, exact numpy; pgvector where the server has it) on real SQLite and
PostgreSQL databases, with small hand-made unit vectors so every expected ranking is known in advance."""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from server.auth import store as auth_store
from server.core.config import Settings
from server.mcp.tools.base import ToolContext, ToolError
from server.mcp.tools.file_search.chunking import chunk_text, split_sentences
from server.mcp.tools.file_search.pgvector import PgVectorStore, install_pgvector
from server.mcp.tools.file_search.selection import open_vector_store
from server.mcp.tools.file_search.sqlite_vec import SqliteVecStore
from server.mcp.tools.file_search.tools import file_search_tools
from server.mcp.tools.file_search.vector_store import DIMENSIONS, ExactVectorStore, IndexedDocument, VectorStore


def words_and_specials(text_: str) -> int:
    """A stand-in token count with the embedder's contract: [CLS] + [SEP] + one token per word or punctuation."""
    return len(re.findall(r"\w+|[^\w\s]", text_)) + 2


def test_sentences_split_at_punctuation_and_blank_lines() -> None:
    text_ = 'First one. "Second?" Third!\n\nA heading\n\nLast line without a stop'
    assert split_sentences(text_) == ["First one.", '"Second?"', "Third!", "A heading", "Last line without a stop"]


def test_chunks_fit_overlap_and_lose_nothing() -> None:
    sentences = [f"Sentence number {i} says something about topic {i % 7}." for i in range(200)]
    chunks = chunk_text(" ".join(sentences), words_and_specials, max_tokens=60, overlap_tokens=15)
    assert len(chunks) > 10
    assert all(words_and_specials(chunk) <= 60 for chunk in chunks)
    for sentence in sentences:
        assert any(sentence in chunk for chunk in chunks)
    for previous, current in itertools.pairwise(chunks):
        last_sentence = split_sentences(previous)[-1]
        assert current.startswith(last_sentence)  # the overlap carries whole trailing sentences
        assert words_and_specials(last_sentence) - 2 <= 15


def test_a_sentence_longer_than_a_chunk_is_cut_between_words() -> None:
    long_sentence = " ".join(f"word{i}" for i in range(500)) + "."
    chunks = chunk_text(long_sentence + " Short tail.", words_and_specials, max_tokens=64, overlap_tokens=8)
    assert all(words_and_specials(chunk) <= 64 for chunk in chunks)
    rebuilt = " ".join(chunks).split()
    assert [w for w in rebuilt if w.startswith("word")][:3] == ["word0", "word1", "word2"]
    assert "word499." in rebuilt and "tail." in rebuilt
    assert chunk_text("   ", words_and_specials, 64, 8) == []


def unit(*weights: tuple[int, float]) -> np.ndarray:
    """A unit vector with the given (axis, weight) components."""
    vector = np.zeros(DIMENSIONS, dtype=np.float32)
    for axis, weight in weights:
        vector[axis] = weight
    return vector / np.linalg.norm(vector)




async def new_user(sessions: async_sessionmaker[AsyncSession]) -> str:
    async with sessions.begin() as session:
        return (await auth_store.create_user(session, username=f"fs-{uuid.uuid4().hex}", is_guest=True)).id


async def store_kinds(sessions: async_sessionmaker[AsyncSession]) -> list[VectorStore]:
    dialect = sessions.kw["bind"].dialect.name
    if dialect == "sqlite":
        return [await open_vector_store("sqlite-vec", sessions), ExactVectorStore(sessions)]
    stores: list[VectorStore] = [ExactVectorStore(sessions)]
    if await install_pgvector(sessions):
        stores.append(await open_vector_store("pgvector", sessions))
    return stores


async def index(
    store: VectorStore, user_id: str, document_id: str, *vectors: np.ndarray, tags: list[str] | None = None
) -> IndexedDocument:
    return await store.replace_document(
        user_id,
        document_id,
        metadata={"name": document_id},
        tags=tags or [],
        token_count=10 * len(vectors),
        chunks=[f"{document_id} chunk {i}" for i in range(len(vectors))],
        embeddings=np.stack(vectors),
    )


async def test_auto_picks_sqlite_vec_on_sqlite_and_a_postgres_store_on_postgres(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = await open_vector_store("auto", sessions)
    if sessions.kw["bind"].dialect.name == "sqlite":
        assert isinstance(store, SqliteVecStore)
        with pytest.raises(RuntimeError, match="does not work with a sqlite database"):
            await open_vector_store("pgvector", sessions)
    else:
        assert isinstance(store, PgVectorStore if await install_pgvector(sessions) else ExactVectorStore)


async def test_search_ranks_documents_by_their_best_chunk(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = await new_user(sessions)
    for store in await store_kinds(sessions):
        await index(store, user, "cats", unit((0, 1)), unit((0, 1), (1, 1)), tags=["pets"])
        await index(store, user, "dogs", unit((1, 1)), unit((2, 1)))
        await index(store, user, "cars", unit((3, 1)))

        matches = await store.search(user, unit((0, 1), (1, 0.1)), 5, None)
        assert [m.document_id for m in matches] == ["cats", "dogs", "cars"], store.name  # one result per document
        assert matches[0].chunk_text == "cats chunk 0" and matches[0].tags == ["pets"]
        assert matches[0].metadata == {"name": "cats"}
        assert matches[0].score == pytest.approx(float(unit((0, 1)) @ unit((0, 1), (1, 0.1))), abs=1e-5)
        assert matches[2].score == pytest.approx(0.0, abs=1e-5)

        assert [m.document_id for m in await store.search(user, unit((2, 1)), 1, None)] == ["dogs"]
        only = await store.search(user, unit((0, 1)), 5, ["cars", "dogs", "unknown"])
        assert [m.document_id for m in only] == ["dogs", "cars"] or [m.document_id for m in only] == ["cars", "dogs"]
        assert await store.search(user, unit((0, 1)), 5, ["unknown"]) == []
        await _delete_all(sessions, user, store)  # the next store kind starts from an empty user


async def test_reindexing_replaces_the_document(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = await new_user(sessions)
    for store in await store_kinds(sessions):
        first = await index(store, user, "notes", unit((0, 1)), unit((1, 1)), unit((2, 1)))
        assert first.chunks == 3
        second = await index(store, user, "notes", unit((5, 1)))
        assert second.chunks == 1 and second.indexed_at >= first.indexed_at
        [old_topic] = await store.search(user, unit((0, 1)), 5, None)
        assert old_topic.chunk_text == "notes chunk 0" and old_topic.score == pytest.approx(0.0, abs=1e-5)
        [match] = await store.search(user, unit((5, 1)), 5, None)
        assert match.score == pytest.approx(1.0, abs=1e-5)
        async with sessions() as session:
            assert await session.scalar(text(f"SELECT count(*) FROM file_search_chunks WHERE user_id = '{user}'")) == 1
        await _delete_all(sessions, user, store)


async def test_users_never_see_each_others_documents(sessions: async_sessionmaker[AsyncSession]) -> None:
    alice, bob = await new_user(sessions), await new_user(sessions)
    for store in await store_kinds(sessions):
        await index(store, alice, "shared-name", unit((0, 1)))
        assert await store.search(bob, unit((0, 1)), 20, None) == []
        assert await store.search(bob, unit((0, 1)), 20, ["shared-name"]) == []
        await index(store, bob, "shared-name", unit((1, 1)))  # Bob's own document, Alice's is untouched
        [alice_match] = await store.search(alice, unit((0, 1)), 20, None)
        [bob_match] = await store.search(bob, unit((0, 1)), 20, None)
        assert alice_match.score == pytest.approx(1.0, abs=1e-5)
        assert bob_match.score == pytest.approx(0.0, abs=1e-5)
        await _delete_all(sessions, alice, store)
        await _delete_all(sessions, bob, store)


async def test_many_chunks_of_one_document_do_not_crowd_out_others(sessions: async_sessionmaker[AsyncSession]) -> None:
    user = await new_user(sessions)
    for store in await store_kinds(sessions):
        near = [unit((0, 1), (axis, 0.05)) for axis in range(10, 60)]  # 50 chunks all close to the query
        await index(store, user, "long", *near)
        await index(store, user, "short", unit((0, 1), (1, 1)))
        matches = await store.search(user, unit((0, 1)), 2, None)
        assert [m.document_id for m in matches] == ["long", "short"], store.name
        await _delete_all(sessions, user, store)


async def test_an_index_is_rebuilt_from_the_stored_chunks(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Chunks written while the exact store served (e.g. before pgvector was installed) reach sqlite-vec's or
    pgvector's table at the next `prepare`."""
    indexed_stores = [store for store in await store_kinds(sessions) if not isinstance(store, ExactVectorStore)]
    if not indexed_stores:
        pytest.skip("this PostgreSQL has no pgvector")
    [index_store] = indexed_stores
    user = await new_user(sessions)
    await index(ExactVectorStore(sessions), user, "written-without-the-index", unit((7, 1)))
    assert await index_store.search(user, unit((7, 1)), 5, None) == []
    await index_store.prepare()
    [match] = await index_store.search(user, unit((7, 1)), 5, None)
    assert match.document_id == "written-without-the-index"


async def _delete_all(sessions: async_sessionmaker[AsyncSession], user_id: str, store: VectorStore) -> None:
    """Deletes a user's documents as deleting the user does (ON DELETE CASCADE), then lets `prepare` drop what
    the cascade cannot reach (sqlite-vec's rows)."""
    async with sessions.begin() as session:
        await session.execute(text("DELETE FROM file_search_documents WHERE user_id = :u"), {"u": user_id})
    await store.prepare()


async def test_concurrent_reindexing_leaves_one_whole_version(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Racing writers of one document_id: each version is all-or-nothing. On PostgreSQL a loser may hit the unique
    constraint (the tool retries that once); whichever version remains has exactly its own chunks."""
    user = await new_user(sessions)
    for store in await store_kinds(sessions):
        await index(store, user, "raced", unit((0, 1)))
        versions = [[unit((axis, 1))] * (axis + 1) for axis in range(1, 6)]
        outcomes = await asyncio.gather(
            *(index(store, user, "raced", *vectors) for vectors in versions), return_exceptions=True
        )
        assert all(not isinstance(o, BaseException) or isinstance(o, IntegrityError) for o in outcomes), outcomes
        async with sessions() as session:
            rows = (
                await session.execute(
                    text(
                        "SELECT d.chunk_count, count(c.pk) FROM file_search_documents d "
                        "JOIN file_search_chunks c ON c.document_pk = d.pk WHERE d.user_id = :u GROUP BY d.pk, "
                        "d.chunk_count"
                    ),
                    {"u": user},
                )
            ).all()
        assert len(rows) == 1 and rows[0][0] == rows[0][1] and rows[0][0] > 1, rows
        [match] = await store.search(user, unit((rows[0][0] - 1, 1)), 5, None)
        assert match.score == pytest.approx(1.0, abs=1e-5)
        await _delete_all(sessions, user, store)


async def test_a_store_setting_the_database_cannot_run_is_a_readable_tool_error(
    sessions: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    wrong = "pgvector" if sessions.kw["bind"].dialect.name == "sqlite" else "sqlite-vec"
    settings = Settings(_env_file=None, data_dir=tmp_path, file_search_vector_store=wrong)  # type: ignore[call-arg]
    [index_tool, query_tool] = file_search_tools(settings, sessions, None)
    assert index_tool.unavailable_reason() == "no embedding model is configured"
    with pytest.raises(ToolError, match=f"file_search_vector_store={wrong} does not work with a"):
        await query_tool.call(ToolContext(user_id=await new_user(sessions), request_id="req"), {"query": "x"})
