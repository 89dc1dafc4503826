"""A numpy forward pass of a BERT encoder (all-MiniLM-L6-v2's architecture) from its safetensors weights.

Matches sentence-transformers to cosine ≥ 0.99999 (shared/research/inference.md §5). Speed choices: every dense
layer is one 2-D GEMM over all tokens of the batch, Q/K/V are fused into a single GEMM, and GELU uses the tanh
approximation (about 5 times faster than erf, same embeddings to 1e-5).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

# Added to attention scores of padding keys: exp() of it is 0 in float32 without producing NaNs.
_MASKED = np.float32(-1e9)
_GELU_C = np.float32(np.sqrt(2.0 / np.pi))


@dataclass(frozen=True)
class _Layer:
    qkv_weight: np.ndarray  # (hidden, 3 * hidden), Q|K|V columns
    qkv_bias: np.ndarray
    attention_out_weight: np.ndarray  # (hidden, hidden)
    attention_out_bias: np.ndarray
    attention_norm: tuple[np.ndarray, np.ndarray]
    intermediate_weight: np.ndarray  # (hidden, intermediate)
    intermediate_bias: np.ndarray
    output_weight: np.ndarray  # (intermediate, hidden)
    output_bias: np.ndarray
    output_norm: tuple[np.ndarray, np.ndarray]


def _layer_norm(x: np.ndarray, norm: tuple[np.ndarray, np.ndarray], eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    variance = np.square(centered).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(variance + eps) * norm[0] + norm[1]


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(_GELU_C * (x + np.float32(0.044715) * x * x * x)))


def _load_layer(weights: dict[str, np.ndarray], prefix: str) -> _Layer:
    def linear(name: str) -> tuple[np.ndarray, np.ndarray]:
        # torch's Linear stores (out, in); keep (in, out) so x @ W is a plain GEMM on contiguous memory.
        return np.ascontiguousarray(weights[f"{prefix}{name}.weight"].T), weights[f"{prefix}{name}.bias"]

    def norm(name: str) -> tuple[np.ndarray, np.ndarray]:
        return weights[f"{prefix}{name}.weight"], weights[f"{prefix}{name}.bias"]

    q, k, v = (linear(f"attention.self.{name}") for name in ("query", "key", "value"))
    attention_out = linear("attention.output.dense")
    intermediate = linear("intermediate.dense")
    output = linear("output.dense")
    return _Layer(
        qkv_weight=np.ascontiguousarray(np.concatenate([q[0], k[0], v[0]], axis=1)),
        qkv_bias=np.concatenate([q[1], k[1], v[1]]),
        attention_out_weight=attention_out[0],
        attention_out_bias=attention_out[1],
        attention_norm=norm("attention.output.LayerNorm"),
        intermediate_weight=intermediate[0],
        intermediate_bias=intermediate[1],
        output_weight=output[0],
        output_bias=output[1],
        output_norm=norm("output.LayerNorm"),
    )


class BertEncoder:
    """BERT with mean pooling over real tokens and L2 normalization: token ids in, sentence vectors out."""

    def __init__(self, model_dir: Path) -> None:
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("position_embedding_type", "absolute") != "absolute" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir}: only absolute positions and GELU are implemented")
        self.hidden = int(config["hidden_size"])
        self.heads = int(config["num_attention_heads"])
        self.max_positions = int(config["max_position_embeddings"])
        self._eps = float(config["layer_norm_eps"])
        weights = {
            name: np.ascontiguousarray(value, dtype=np.float32)
            for name, value in load_file(str(model_dir / "model.safetensors")).items()
            if value.dtype.kind == "f"  # skips the int64 `position_ids` buffer
        }
        self._word = weights["embeddings.word_embeddings.weight"]
        self._position = weights["embeddings.position_embeddings.weight"]
        # Every input is one segment: token type 0 for all tokens.
        self._type0 = weights["embeddings.token_type_embeddings.weight"][0]
        self._embedding_norm = (weights["embeddings.LayerNorm.weight"], weights["embeddings.LayerNorm.bias"])
        self._layers = [_load_layer(weights, f"encoder.layer.{i}.") for i in range(int(config["num_hidden_layers"]))]

    def encode(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """ids and mask: (batch, length) of token ids and 1/0 for real/padding tokens → (batch, hidden) unit rows."""
        batch, length = ids.shape
        x = self._word[ids] + self._position[:length] + self._type0
        x = _layer_norm(x, self._embedding_norm, self._eps).reshape(batch * length, self.hidden)
        key_bias = ((1 - mask[:, None, None, :]) * _MASKED).astype(np.float32)  # (batch, 1, 1, length)
        for layer in self._layers:
            x = self._layer(layer, x, key_bias, batch, length)
        tokens = x.reshape(batch, length, self.hidden)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (tokens * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def _layer(self, layer: _Layer, x: np.ndarray, key_bias: np.ndarray, batch: int, length: int) -> np.ndarray:
        heads, head_size = self.heads, self.hidden // self.heads
        qkv = x @ layer.qkv_weight + layer.qkv_bias  # (batch*length, 3*hidden)
        # → 3 tensors of (batch, heads, length, head_size)
        q, k, v = qkv.reshape(batch, length, 3, heads, head_size).transpose(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(head_size)) + key_bias
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, self.hidden)
        attended = context @ layer.attention_out_weight + layer.attention_out_bias
        x = _layer_norm(attended + x, layer.attention_norm, self._eps)
        inner = _gelu_tanh(x @ layer.intermediate_weight + layer.intermediate_bias)
        return _layer_norm(inner @ layer.output_weight + layer.output_bias + x, layer.output_norm, self._eps)
