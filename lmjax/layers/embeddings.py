"""Embedding tables: tokens, learned and sinusoidal positions, segments (token types).

    e_t = E[x_t]                        token embedding, E [V_pad, C]; V_pad = V rounded up to a multiple of 128
    p_t = P[pos_t]  or  PE(pos_t)       learned position table P [max_len, C], or fixed sinusoids (Vaswani et al.)
    s_t = S[seg_t]                      segment embedding, S [num_segments, C] (BERT's token types)
    logits_t = h_t E^T                  tied output projection, columns >= V at -inf

The vocabulary is padded for matmul-friendly shapes; the padding rows are never looked up and their logits are -inf,
so they get probability 0 in every softmax, argmax and sampler. Tables are fp32 parameters ~ N(0, 0.02^2) unless
another initializer is given.

`embedding(module, name, ...)` declares a table as the parameter `name` of the calling module (GPT's `wte` and `wpe`
sit at the top of its tree); `Embed` is the same table as a module of its own (parameter `embedding`). Lookups
and the tied projection all-gather the table's embed axis first: SPMD cannot turn a gather's fsdp-sharded rows into
batch-sharded activations without replicating them in full, and it got the projection's gradient wrong beside one.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.layers.linear import Initializer, param
from lmjax.ops.positional import sinusoidal

VOCAB_MULTIPLE = 128


def padded_size(n: int, multiple: int = VOCAB_MULTIPLE) -> int:
    """n rounded up to a multiple of `multiple` (a vocabulary's table rows)."""
    return -(-n // multiple) * multiple


def embedding(module: nn.Module, name: str, rows: int, features: int, *, axes: tuple[str, str] = ("vocab", "embed"),
              init: Initializer | None = None) -> jax.Array:
    """The fp32 table [rows, features] `name` of `module`, ~ N(0, 0.02^2) unless `init` is given."""
    return param(module, name, (rows, features), axes, init or nn.initializers.normal(0.02))


def lookup(table: jax.Array, ids: jax.Array, row_axis: str = "vocab") -> jax.Array:
    """table[ids]: [rows, C] at int ids [...] -> [..., C], with the table's embed axis all-gathered first."""
    return nn.with_logical_constraint(table, (row_axis, None))[ids]


def attend(table: jax.Array, x: jax.Array, dtype: Any = jnp.float32, row_axis: str = "vocab") -> jax.Array:
    """x E^T: hidden states [..., C] -> logits [..., rows] through the (tied) table, in the compute dtype, with the
    table's embed axis all-gathered first (as `lookup`'s). Left to itself, SPMD partitioned the backward of this
    product wrongly on a data x fsdp x tensor mesh when the same table also fed a lookup: BERT's eval-mode
    gradients below the MLM head were off by up to 0.11 (tests/integration/test_bert_sharding.py)."""
    table = nn.with_logical_constraint(table, (row_axis, None))
    return x.astype(dtype) @ table.astype(dtype).T


def mask_padded_vocab(logits: jax.Array, vocab_size: int) -> jax.Array:
    """fp32 logits with the padding columns (index >= vocab_size) at -inf."""
    return jnp.where(jnp.arange(logits.shape[-1]) < vocab_size, logits.astype(jnp.float32), -jnp.inf)


def sinusoidal_positions(positions: jax.Array, features: int, max_len: int) -> jax.Array:
    """PE[positions]: fp32 [..., features] of `lmjax.ops.sinusoidal(max_len, features)` at int positions < max_len."""
    return sinusoidal(max_len, features)[positions]


class Embed(nn.Module):
    """A table of `num_embeddings` rows (padded to a multiple of `pad_to`, 1 = no padding): ids [...] -> [..., C].

    For tokens: Embed(V, C, pad_to=128); positions: Embed(max_len, C, axes=("positions", "embed")); segments:
    Embed(2, C, axes=("segments", "embed")). `attend` is the tied output projection, padding columns at -inf.
    """

    num_embeddings: int
    features: int
    axes: tuple[str, str] = ("vocab", "embed")
    pad_to: int = 1
    embedding_init: Initializer | None = None  # default N(0, 0.02^2)
    dtype: Any = jnp.float32  # of `attend`'s matmul

    def setup(self):
        self.embedding = embedding(self, "embedding", padded_size(self.num_embeddings, self.pad_to), self.features,
                                   axes=self.axes, init=self.embedding_init)

    def __call__(self, ids: jax.Array) -> jax.Array:
        return lookup(self.embedding, ids, self.axes[0])

    def attend(self, x: jax.Array) -> jax.Array:
        return mask_padded_vocab(attend(self.embedding, x, self.dtype, self.axes[0]), self.num_embeddings)
