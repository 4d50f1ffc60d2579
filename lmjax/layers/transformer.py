"""The Transformer's position-wise MLP and its block, pre-LN (GPT-2) or post-LN (Vaswani et al., 2017; BERT).

    MLP(x) = D_a(act(x W_fc^T + b_fc)) W_proj^T + b_proj       act: GELU (exact or tanh) or ReLU; C -> hidden -> C

    pre-LN:   x = x + D(Attn(LN_1(x)))                          post-LN:  x = LN_1(x + D(Attn(x)))
              x = x + D(Cross(LN_c(x), enc))    (decoder)                 x = LN_c(x + D(Cross(x, enc)))
              x = x + D(MLP(LN_2(x)))                                     x = LN_2(x + D(MLP(x)))

D is dropout on each residual branch (active with train=True; needs rngs={"dropout": key}); `attention_dropout`
drops softmax weights inside the attentions and `activation_dropout` (D_a) the MLP's hidden units (fairseq's
`--attention-dropout` / `--activation-dropout`; 0 by default). Dropout is `lmjax.layers.Dropout`: one random byte per
element, the rate rounded to a multiple of 1/256. Attn is
`MultiHeadAttention` (causal for decoders and GPT); Cross attends from the decoder to the encoder output `context`,
masked by `context_mask` [B, S]. The residual stream stays fp32 and the LayerNorms are fp32 (`LayerNorm`); the
sublayers' matmuls run in the compute dtype. A pre-LN stack needs a final LayerNorm after its last block (GPT's
`ln_f`); a post-LN stack ends normalized.

Parameter names: attn/{c_attn, c_proj}, ln_1, mlp/{c_fc, c_proj}, ln_2, and for a decoder cross_attn/{q_attn,
kv_attn, c_proj} and ln_cross (GPT-2's names, so its checkpoints map one to one).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.layers.attention import KVCache, MultiHeadAttention
from lmjax.layers.dropout import Dropout
from lmjax.layers.linear import Linear
from lmjax.layers.norm import LayerNorm

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact erf GELU (nanoGPT, BERT)
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # GPT-2's tanh approximation
    "relu": jax.nn.relu,  # the original Transformer
}


class MLP(nn.Module):
    """x [..., C] -> [..., features] through `hidden` units: c_fc, activation, c_proj."""

    hidden: int
    features: int
    activation: str = "gelu"  # one of ACTIVATIONS
    use_bias: bool = True
    std: float = 0.02
    out_std: float = 0.02
    dtype: Any = jnp.float32
    dropout: float = 0.0  # on the hidden units after the activation, with train=True

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation={self.activation!r} is unknown: choose one of {', '.join(ACTIVATIONS)}")
        h = Linear((self.hidden,), ("mlp", "embed"), std=self.std, use_bias=self.use_bias, dtype=self.dtype,
                   name="c_fc")(x)
        h = nn.with_logical_constraint(ACTIVATIONS[self.activation](h), ("batch", "length", "mlp"))
        if self.dropout:
            h = Dropout(self.dropout)(h, deterministic=not train)
        return Linear((self.features,), ("embed", "mlp"), std=self.out_std, use_bias=self.use_bias, dtype=self.dtype,
                      name="c_proj")(h)


class TransformerBlock(nn.Module):
    """x fp32 [B, T, C] -> fp32 [B, T, C]; returns (x, cache) when called with a self-attention cache.

    `norm` "pre" or "post"; `causal` masks the self-attention; `cross_attention` adds the decoder's sublayer.
    `out_std` is the initial std of the residual projections (attention's and the MLP's c_proj).
    """

    num_heads: int
    features: int
    mlp_hidden: int
    norm: str = "pre"
    causal: bool = False
    cross_attention: bool = False
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "gelu"
    use_bias: bool = True
    epsilon: float = 1e-5
    std: float = 0.02
    out_std: float = 0.02
    implementation: str = "auto"
    dtype: Any = jnp.float32

    def setup(self):
        if self.norm not in ("pre", "post"):
            raise ValueError(f"norm={self.norm!r} is unknown: use 'pre' (GPT-2) or 'post' (Transformer, BERT)")
        attention = dict(num_heads=self.num_heads, features=self.features, use_bias=self.use_bias, std=self.std,
                         out_std=self.out_std, implementation=self.implementation, dropout=self.attention_dropout,
                         dtype=self.dtype)
        norm = dict(epsilon=self.epsilon, use_bias=self.use_bias)
        self.attn = MultiHeadAttention(causal=self.causal, **attention)
        self.ln_1 = LayerNorm(**norm)
        if self.cross_attention:
            self.cross_attn = MultiHeadAttention(cross=True, **attention)
            self.ln_cross = LayerNorm(**norm)
        self.mlp = MLP(self.mlp_hidden, self.features, self.activation, self.use_bias, self.std, self.out_std,
                       self.dtype, self.activation_dropout)
        self.ln_2 = LayerNorm(**norm)
        self.drop = Dropout(self.dropout)

    def encode(self, context: jax.Array) -> KVCache:
        """The cross-attention keys and values of the encoder output [B, S, C_enc], to pass as `cross_cache`."""
        return self.cross_attn.encode(context)

    def __call__(self, x: jax.Array, context: jax.Array | None = None, *, key_mask: jax.Array | None = None,
                 context_mask: jax.Array | None = None, mask: jax.Array | None = None, cache: KVCache | None = None,
                 cache_index: jax.Array | None = None, cross_cache: KVCache | None = None, train: bool = False):
        """key_mask [B, S] / mask: the self-attention's (see `MultiHeadAttention`); context [B, S_enc, C_enc] or its
        `encode`d cross_cache, with context_mask [B, S_enc]: the cross-attention's (decoder blocks only)."""
        if (context is not None or cross_cache is not None) != self.cross_attention:
            raise ValueError("a block with cross_attention=True needs `context` (or `cross_cache`); one without "
                             "takes neither")

        pre = self.norm == "pre"

        def branch(y):  # dropout on the residual branch, back into the fp32 stream
            return self.drop(y, deterministic=not train).astype(jnp.float32)

        y = self.attn(self.ln_1(x) if pre else x, key_mask=key_mask, mask=mask, cache=cache, cache_index=cache_index,
                      train=train)
        if cache is not None:
            y, cache = y
        x = x + branch(y) if pre else self.ln_1(x + branch(y))
        if self.cross_attention:
            y = self.cross_attn(self.ln_cross(x) if pre else x, context, key_mask=context_mask, cache=cross_cache,
                                train=train)
            y = y if cross_cache is None else y[0]
            x = x + branch(y) if pre else self.ln_cross(x + branch(y))
        y = self.mlp(self.ln_2(x) if pre else x, train=train)
        x = x + branch(y) if pre else self.ln_2(x + branch(y))
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        return x if cache is None else (x, cache)
