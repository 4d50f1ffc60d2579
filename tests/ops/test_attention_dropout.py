"""Attention dropout: `dot_product_attention(dropout_rate=r, dropout_rng=key)` and the layers that use it.

The math checked: out = ((softmax(q k^T * scale, masked) * keep) / (1 - p)) v with
keep, p = lmjax.ops.dropout.keep_mask(key, [B, H, T, S], r) (P(keep) = 1 - p, p = r rounded to a multiple of 1/256);
r = 0 or key None is attention without dropout; masked keys keep exactly zero weight; E_keep[out] = the attention
without dropout. `MultiHeadAttention(dropout=r)` and
`MLP(dropout=r)` drop only with train=True (and a "dropout" rng), and are unbiased.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.layers import MLP, MultiHeadAttention
from lmjax.ops import causal_mask, combine_masks, dot_product_attention, lengths_to_mask, padding_mask
from lmjax.ops.dropout import keep_mask

B, T, S, H, D = 2, 5, 8, 4, 8
RATE = 0.3


def normal(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def qkv(kv_heads=H):
    return normal((B, T, H, D), 1), normal((B, S, kv_heads, D), 2), normal((B, S, kv_heads, D), 3)


def padded_mask():
    """Row 0 sees all keys, row 1 the first 5; query 4 of row 1 sees none (all masked)."""
    keys = padding_mask(lengths_to_mask(jnp.array([S, 5]), S))
    queries = lengths_to_mask(jnp.array([T, 4]), T)[:, None, :, None]
    return combine_masks(keys, queries)


def weights(q, k, mask):
    """float64 softmax weights [B, H, T, S] over the unmasked keys (0 on masked ones and on fully masked rows)."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    k = np.repeat(k, q.shape[2] // k.shape[2], axis=2)
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    mask = np.broadcast_to(np.ones((), bool) if mask is None else np.asarray(mask), logits.shape)
    row_max = np.max(np.where(mask, logits, -np.inf), -1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    e = np.where(mask, np.exp(np.where(mask, logits - row_max, 0.0)), 0.0)
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def dropped_reference(q, k, v, mask, rate, rng):
    keep, p = keep_mask(rng, (B, H, T, S), rate)
    probs = weights(q, k, mask) * np.asarray(keep) / (1.0 - p)
    v = np.repeat(np.asarray(v, np.float64), H // v.shape[2], axis=2)
    return np.einsum("bhts,bshd->bthd", probs, v)


@pytest.mark.parametrize("implementation", ["xla", "jax"])
def test_rate_zero_or_no_rng_is_attention_without_dropout(implementation):
    q, k, v = qkv()
    mask = padded_mask()
    plain = dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    rng = jax.random.key(0)
    np.testing.assert_array_equal(
        dot_product_attention(q, k, v, mask=mask, implementation=implementation, dropout_rate=0.0, dropout_rng=rng),
        plain)
    np.testing.assert_array_equal(
        dot_product_attention(q, k, v, mask=mask, implementation=implementation, dropout_rate=RATE), plain)


# dropout always takes the einsum path, whatever `implementation` asks for
@pytest.mark.parametrize("kv_heads,masked,implementation", [(H, True, "xla"), (H, False, "auto"), (2, True, "jax"),
                                                            (1, False, "xla")])
def test_dropout_is_the_plain_math_for_the_same_keep_mask(kv_heads, masked, implementation):
    q, k, v = qkv(kv_heads)
    mask = padded_mask() if masked else causal_mask(T, S, offset=S - T)
    rng = jax.random.key(7)
    attend = jax.jit(lambda q, k, v, rng: dot_product_attention(q, k, v, mask=mask, implementation=implementation,
                                                                dropout_rate=RATE, dropout_rng=rng))
    out = attend(q, k, v, rng)
    np.testing.assert_allclose(out, dropped_reference(q, k, v, mask, RATE, rng), atol=1e-5)
    assert not np.allclose(out, dot_product_attention(q, k, v, mask=mask), atol=1e-3)  # something was dropped
    assert not np.allclose(out, attend(q, k, v, jax.random.key(8)), atol=1e-3)  # another key, another draw


def test_masked_keys_keep_exactly_zero_weight_under_dropout():
    q, k, _ = qkv()
    mask = padded_mask()
    # With D = S and v = one-hot over the keys, the output is the (dropped, rescaled) weight matrix itself.
    assert D == S
    v = jnp.broadcast_to(jnp.eye(S)[None, :, None, :], (B, S, H, S))
    rng = jax.random.key(3)
    out = dot_product_attention(q, k, v, mask=mask, dropout_rate=RATE, dropout_rng=rng)  # [B, T, H, S]
    w = np.asarray(out).transpose(0, 2, 1, 3)  # [B, H, T, S]
    full = np.broadcast_to(np.asarray(mask), w.shape)
    assert (w[~full] == 0).all()  # exactly zero on every masked key, and on the fully masked query row
    assert (w[1, :, 4] == 0).all()
    plain = weights(q, k, mask)
    keep, p = keep_mask(rng, (B, H, T, S), RATE)
    keep = np.asarray(keep)
    assert abs(p - RATE) <= 1 / 512
    assert (w[full & ~keep] == 0).all()  # dropped weights are zero, kept ones rescaled
    np.testing.assert_allclose(w[full & keep], plain[full & keep] / (1 - p), rtol=1e-5)
    assert 0.5 < keep[full].mean() < 0.9  # about 1 - RATE of the visible weights are kept


def test_the_mean_over_many_draws_approaches_attention_without_dropout():
    q, k, v = qkv(kv_heads=2)
    mask = padded_mask()
    n = 4000
    keys = jax.random.split(jax.random.key(11), n)
    draws = jax.jit(jax.vmap(lambda rng: dot_product_attention(q, k, v, mask=mask, dropout_rate=0.5,
                                                               dropout_rng=rng)))(keys)
    draws = np.asarray(draws, np.float64)
    plain = np.asarray(dot_product_attention(q, k, v, mask=mask), np.float64)
    stderr = draws.std(0) / np.sqrt(n)
    assert np.all(np.abs(draws.mean(0) - plain) <= 5 * stderr + 1e-6)  # unbiased: E[keep / (1 - r)] = 1
    assert np.abs(draws[0] - plain).max() > 0.1  # while one draw is far from it


def test_dropout_gradients_flow_through_kept_weights_only():
    q, k, v = qkv()
    mask = padded_mask()
    rng = jax.random.key(5)
    grad_v = jax.grad(lambda v: dot_product_attention(q, k, v, mask=mask, dropout_rate=RATE,
                                                      dropout_rng=rng).sum())(v)
    keep, p = keep_mask(rng, (B, H, T, S), RATE)
    # d sum(out) / d v[b, s, h, :] = sum_t w_dropped[b, h, t, s]
    expected = (weights(q, k, mask) * np.asarray(keep) / (1 - p)).sum(2).transpose(0, 2, 1)[..., None]
    np.testing.assert_allclose(grad_v, np.broadcast_to(expected, grad_v.shape), atol=1e-5)
    assert np.isfinite(np.asarray(grad_v)).all()


# --------------------------------------------------------------------------------------------------- the layers

C = 16


def random_params(module, *args, scale: float = 1.0):
    """`module`'s params for `module.init(key, *args)`, every leaf N(0, scale^2) from NumPy (faster than init)."""
    abstract = nn.meta.unbox(jax.eval_shape(lambda key: module.init(key, *args), jax.random.key(0)))["params"]
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda a: (scale * rng.standard_normal(a.shape)).astype(np.float32), abstract)


def _check_layer_dropout(module, no_dropout, *inputs, draws: int = 1000):
    """`module` (dropout > 0) is `no_dropout` with train=False whatever the key, and drops, differently per key and
    unbiasedly, with train=True. One compiled program computes every output."""
    params = random_params(module, *inputs)

    @jax.jit
    def outputs(params, *inputs):
        def apply(train, key):
            return module.apply({"params": params}, *inputs, train=train, rngs={"dropout": jax.random.key(key)})

        keys = jax.random.split(jax.random.key(3), draws)
        return {"eval_1": apply(False, 1), "eval_2": apply(False, 2), "train_1": apply(True, 1),
                "train_2": apply(True, 2), "plain": no_dropout.apply({"params": params}, *inputs),
                "plain_train": no_dropout.apply({"params": params}, *inputs, train=True),  # rate 0: no rng needed
                "draws": jax.vmap(lambda k: module.apply({"params": params}, *inputs, train=True,
                                                         rngs={"dropout": k}))(keys)}

    out = jax.device_get(outputs(params, *inputs))
    np.testing.assert_array_equal(out["eval_1"], out["eval_2"])  # deterministic without train
    np.testing.assert_array_equal(out["eval_1"], out["plain"])  # and the same as without dropout
    np.testing.assert_array_equal(out["plain_train"], out["plain"])
    assert not np.allclose(out["train_1"], out["eval_1"], atol=1e-4)  # dropped in training
    assert not np.allclose(out["train_1"], out["train_2"], atol=1e-4)  # another key, another draw
    # the op after the dropout is linear (c_proj), so the expectation over draws is the eval output
    sample = np.asarray(out["draws"], np.float64)
    stderr = sample.std(0) / np.sqrt(draws)
    assert np.all(np.abs(sample.mean(0) - np.asarray(out["eval_1"], np.float64)) <= 5 * stderr + 1e-5)


def test_multi_head_attention_drops_weights_only_in_training():
    x = normal((B, T, C), 4)
    _check_layer_dropout(MultiHeadAttention(4, C, causal=True, dropout=0.5), MultiHeadAttention(4, C, causal=True), x)


def test_cross_attention_drops_weights_only_in_training():
    x, context = normal((B, T, C), 4), normal((B, S, C), 5)
    _check_layer_dropout(MultiHeadAttention(4, C, cross=True, dropout=0.5), MultiHeadAttention(4, C, cross=True),
                         x, context)


def test_mlp_drops_hidden_units_only_in_training():
    x = normal((B, T, C), 6)
    _check_layer_dropout(MLP(32, C, activation="relu", dropout=0.5), MLP(32, C, activation="relu"), x)


def test_dropout_in_training_needs_a_dropout_rng():
    x = normal((B, T, C), 4)
    mha = MultiHeadAttention(4, C, dropout=0.5)
    params = random_params(mha, x)
    with pytest.raises(Exception, match="dropout"):
        jax.eval_shape(lambda p: mha.apply({"params": p}, x, train=True), params)
