"""Multi-head attention (Vaswani et al., 2017) for self, causal and cross attention, with a KV cache.

    q = x W_q,  k = m W_k,  v = m W_v           per head: [B, T, H, D] (m = x, or the encoder's output for cross)
    o_h = softmax(q_h k_h^T / sqrt(D) + mask) v_h
    y = concat_h(o_h) W_o                       [B, T, C]

Self-attention projects q, k, v with one fused kernel `c_attn` [3, H, D, C] (GPT's layout); cross-attention projects
q with `q_attn` [H, D, C] from the decoder's x and k, v with one fused `kv_attn` [2, H, D, C_enc] from the encoder's
output; both end in `c_proj` [C, H, D]. The softmax runs in fp32 in `lmjax.ops.dot_product_attention`.

Masks (True = may attend), combined by AND: `causal` (query t sees keys <= t), a key padding mask `key_mask` [B, S]
(True = a real key; padded keys then get exactly zero weight, so what they hold never matters) and any extra `mask`
broadcastable to [B, H, T, S]. A query whose keys are all masked outputs 0.

KV cache, for incremental decoding. Self-attention: a fixed-size {"k", "v"} [B, S, H, D] (`init_kv_cache`); a call
with T new tokens writes their keys and values at slots cache_index[b] .. cache_index[b] + T - 1 of row b and attends
over all S slots, query t of row b seeing the slots <= cache_index[b] + t (causal) or < cache_index[b] + T (not
causal); unwritten slots are never seen. Cross-attention: the projected encoder keys and values, computed once per
source by `encode` and passed as `cache` at every decoding step.

Attention maps: applied with `mutable=["intermediates"]`, each attention sows its weights [B, H, T, S] as
`attention_weights` (nothing is computed or stored otherwise).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lmjax.layers.linear import Linear
from lmjax.ops.attention import causal_mask, combine_masks, dot_product_attention, padding_mask

KVCache = dict[str, jax.Array]  # {"k", "v"}: [B, S, H, D]
_HEADS = ("batch", "length", "heads", "kv")


def init_kv_cache(batch: int, length: int, num_heads: int, head_dim: int, dtype: Any = jnp.float32) -> KVCache:
    """An empty self-attention cache: {"k", "v"} of zeros [batch, length, num_heads, head_dim]."""
    shape = (batch, length, num_heads, head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def write_rows(cache: jax.Array, new: jax.Array, start: jax.Array) -> jax.Array:
    """cache [B, S, H, D] with new [B, T, H, D] written at slots start[b] .. start[b] + T - 1 of each row b."""
    return jax.vmap(lambda c, x, i: lax.dynamic_update_slice_in_dim(c, x, i, axis=0))(
        cache, new.astype(cache.dtype), start)


def cached_mask(q_len: int, kv_len: int, cache_index: jax.Array, *, causal: bool) -> jax.Array:
    """bool [B, 1, T, S] over cache slots for T queries written from slot cache_index[b] on (see the module doc)."""
    if causal:
        return causal_mask(q_len, kv_len, offset=cache_index)
    return padding_mask(jnp.arange(kv_len) < (cache_index + q_len)[:, None])


def attention_weights(q: jax.Array, k: jax.Array, mask: jax.Array | None) -> jax.Array:
    """fp32 softmax(q k^T / sqrt(D)) [B, H, T, S] with masked keys at exactly 0 (what the attention averages by)."""
    logits = jnp.einsum("bthd,bshd->bhts", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
    logits = logits * jnp.float32(q.shape[-1] ** -0.5)
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    return jnp.where(mask, jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1), 0.0)


class MultiHeadAttention(nn.Module):
    """x [B, T, C_in] (and for cross-attention the encoder's output [B, S, C_enc]) -> y [B, T, features].

    Returns y, or (y, cache) when called with a cache. `head_dim` 0 means features // num_heads. `std` is the
    initial std of the input projections, `out_std` of `c_proj` (GPT: 0.02 / sqrt(2 L)). Matmuls run in `dtype`.
    """

    num_heads: int
    features: int
    head_dim: int = 0
    cross: bool = False
    causal: bool = False
    use_bias: bool = True
    std: float = 0.02
    out_std: float = 0.02
    implementation: str = "auto"  # of ops.dot_product_attention
    dropout: float = 0.0  # attention dropout on the softmax weights, with train=True (needs a "dropout" rng)
    dtype: Any = jnp.float32

    def setup(self):
        if self.cross and self.causal:
            raise ValueError("cross-attention cannot be causal: the decoder's queries see the whole source")
        heads = (self.num_heads, self.head_dim or self.features // self.num_heads)
        kw = dict(std=self.std, use_bias=self.use_bias, dtype=self.dtype)
        if self.cross:
            self.q_attn = Linear(heads, ("heads", "kv", "embed"), **kw)
            self.kv_attn = Linear((2, *heads), ("qkv", "heads", "kv", "embed"), **kw)
        else:
            self.c_attn = Linear((3, *heads), ("qkv", "heads", "kv", "embed"), **kw)
        self.c_proj = Linear((self.features,), ("embed", "heads", "kv"), in_axes=2, std=self.out_std,
                             use_bias=self.use_bias, dtype=self.dtype)

    def encode(self, context: jax.Array) -> KVCache:
        """Cross-attention's keys and values of the encoder output context [B, S, C_enc]: {"k", "v"} [B, S, H, D]."""
        kv = self.kv_attn(context)
        return {name: nn.with_logical_constraint(kv[:, :, i], _HEADS) for i, name in enumerate(("k", "v"))}

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, key_mask: jax.Array | None = None,
                 mask: jax.Array | None = None, cache: KVCache | None = None,
                 cache_index: jax.Array | None = None, train: bool = False):
        """key_mask: bool [B, S] over the keys (the cache's slots when caching self-attention; the source positions
        for cross-attention). cache: self-attention's {"k", "v"} with cache_index int [B], or cross-attention's
        `encode(context)` (then `context` may be None)."""
        t = x.shape[1]
        if self.cross:
            q = nn.with_logical_constraint(self.q_attn(x), _HEADS)
            kv = cache if cache is not None else self.encode(context)
            k, v = kv["k"], kv["v"]
            structural = None
        else:
            qkv = self.c_attn(x)
            q, k, v = (nn.with_logical_constraint(qkv[:, :, i], _HEADS) for i in range(3))
            if cache is None:
                structural = causal_mask(t) if self.causal else None
            else:
                cache = {"k": write_rows(cache["k"], k, cache_index), "v": write_rows(cache["v"], v, cache_index)}
                k, v = cache["k"], cache["v"]
                structural = cached_mask(t, k.shape[1], cache_index, causal=self.causal)
        full = combine_masks(structural, None if key_mask is None else padding_mask(key_mask), mask)
        if self.is_mutable_collection("intermediates"):  # apply(..., mutable=["intermediates"]): for attention maps
            self.sow("intermediates", "attention_weights", attention_weights(q, k, full))
        rng = self.make_rng("dropout") if train and self.dropout > 0 else None
        y = dot_product_attention(q, k, v, mask=full, implementation=self.implementation, dropout_rate=self.dropout,
                                  dropout_rng=rng)
        y = self.c_proj(y)
        return y if cache is None else (y, cache)
