"""Scaled dot-product attention and its masks.

Layout follows `jax.nn.dot_product_attention`: activations are [batch, length, heads, head_dim] and masks/biases
broadcast to [batch, heads, q_len, kv_len]. A boolean mask is True where a query may attend to a key.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from lmjax.ops.dropout import dropout

Implementation = Literal["auto", "xla", "jax"]

# Masked logits get a large finite negative, not -inf: a fully masked row then softmaxes to a finite uniform row
# (zeroed afterwards) instead of NaN, in the forward and the backward pass.
_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)

# "auto" picks "xla" on CPU: at B=12, T=64, H=4, D=32, jit'd forward+backward took 1.7-1.8 ms here against
# 2.3-2.6 ms through jax.nn.dot_product_attention (medians of 300, causal mask or none, with and without the YNNPACK
# fusion flag). Elsewhere "jax": its `implementation=None` may route to a fused kernel (cuDNN) in future versions.
_AUTO_ON_CPU = "xla"


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    implementation: Implementation = "auto",
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: jax.Array | None = None,
) -> jax.Array:
    """softmax(q k^T * scale + bias, masked) v, per head.

    q: [B, T, H, D]; k, v: [B, S, K, D] with H a multiple of K (K < H is grouped-query attention: query head h
    reads key/value head h // (H // K)). mask: bool, broadcastable to [B, H, T, S], True = may attend.
    bias: float, broadcastable to [B, H, T, S], added to the scaled logits. scale defaults to 1/sqrt(D).
    Logits and softmax are fp32 whatever the input dtype; the output is [B, T, H, D] in q.dtype. A query row whose
    mask is all False outputs exactly 0. implementation: "xla" (the einsums below), "jax"
    (`jax.nn.dot_product_attention`), "auto" ("xla" on CPU, where it measured faster; "jax" elsewhere).
    Attention dropout (`dropout_rate` > 0 with a `dropout_rng`): each weight is zeroed with that probability and the
    rest scaled by 1 / (1 - rate) after the softmax (Vaswani et al.; torch's `dropout_p`), through
    `lmjax.ops.dropout` (the rate rounded to a multiple of 1/256); it always takes the "xla" path, which
    materialises the weights.
    """
    *_, num_heads, head_dim = q.shape
    num_kv_heads = k.shape[-2]
    if num_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_heads}) must be a multiple of key/value heads ({num_kv_heads})")
    if scale is None:
        scale = head_dim**-0.5
    if mask is not None:
        mask = jnp.asarray(mask, bool)
    if dropout_rate > 0.0 and dropout_rng is not None:
        return _attention_xla(q, k, v, mask, bias, scale, dropout_rate, dropout_rng)
    if implementation == "auto":
        implementation = _AUTO_ON_CPU if jax.default_backend() == "cpu" else "jax"
    if implementation == "xla":
        return _attention_xla(q, k, v, mask, bias, scale)
    if implementation == "jax":
        return _attention_jax(q, k, v, mask, bias, scale)
    raise ValueError(f"implementation must be 'auto', 'xla' or 'jax', got {implementation!r}")


def _attention_xla(q, k, v, mask, bias, scale, dropout_rate=0.0, dropout_rng=None):
    """The plain einsum math; heads split as (kv_head, group) so GQA never copies k or v."""
    b, t, h, d = q.shape
    s, kv_heads = k.shape[1], k.shape[2]
    groups = h // kv_heads
    qg = q.reshape(b, t, kv_heads, groups, d)
    logits = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    logits = logits.reshape(b, h, t, s) * jnp.float32(scale)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        logits = jnp.where(mask, logits, _MASKED)
    probs = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        # Exact zeros on masked keys, so a fully masked row (uniform after softmax) contributes nothing.
        probs = jnp.where(mask, probs, 0.0)
    if dropout_rate > 0.0 and dropout_rng is not None:
        probs = dropout(probs, dropout_rate, dropout_rng)
    probs = probs.astype(v.dtype).reshape(b, kv_heads, groups, t, s)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v)
    return out.reshape(b, t, h, d).astype(q.dtype)


def _attention_jax(q, k, v, mask, bias, scale):
    """`jax.nn.dot_product_attention`, with fully masked query rows zeroed (the library returns their mean value)."""
    if mask is not None:
        mask = _as_4d(mask)
    if bias is not None:
        bias = _as_4d(bias).astype(jnp.float32)
    out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype), bias=bias, mask=mask, scale=scale)
    if mask is None:
        return out
    row_valid = jnp.any(mask, axis=-1).transpose(0, 2, 1)[..., None]  # [B|1, T|1, H|1, 1]
    return jnp.where(row_valid, out, jnp.zeros((), out.dtype))


def _as_4d(x: jax.Array) -> jax.Array:
    return x.reshape((1,) * (4 - x.ndim) + x.shape)


def causal_mask(q_len: int, kv_len: int | None = None, *, offset: int | jax.Array = 0) -> jax.Array:
    """bool [1, 1, T, S]: query i, at absolute position offset + i, sees keys j <= offset + i.

    kv_len defaults to q_len. `offset` may be traced (the cache position while decoding); an int [B] of per-row
    offsets (rows of a batch at different cache positions) gives [B, 1, T, S].
    """
    kv_len = q_len if kv_len is None else kv_len
    offset = jnp.asarray(offset)
    q_pos = offset[..., None, None] + jnp.arange(q_len)[:, None]  # [..., T, 1]
    mask = jnp.arange(kv_len) <= q_pos  # [..., T, S]
    return mask[None, None] if offset.ndim == 0 else mask[:, None]


def padding_mask(valid: jax.Array) -> jax.Array:
    """bool [B, 1, 1, S] from a [B, S] bool/int validity array: every query may attend to the valid keys."""
    return jnp.asarray(valid).astype(bool)[:, None, None, :]


def lengths_to_mask(lengths: jax.Array, max_len: int) -> jax.Array:
    """bool [B, S=max_len]: position j of row b is valid iff j < lengths[b]."""
    return jnp.arange(max_len) < jnp.asarray(lengths)[:, None]


def combine_masks(*masks: jax.Array | None) -> jax.Array | None:
    """Logical AND of the masks that are not None (broadcasting); None if all are None."""
    present = [jnp.asarray(m, bool) for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = jnp.logical_and(out, m)
    return out


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """[..., H*D] -> [..., H, D]."""
    if x.shape[-1] % num_heads:
        raise ValueError(f"feature size {x.shape[-1]} is not divisible by num_heads={num_heads}")
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def merge_heads(x: jax.Array) -> jax.Array:
    """[..., H, D] -> [..., H*D]."""
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])
