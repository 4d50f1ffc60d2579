import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.layers import MLP, LayerNorm, MultiHeadAttention, TransformerBlock, init_kv_cache

B, T, S, C, H, F = 2, 6, 5, 8, 2, 16


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("activation", ["gelu", "gelu_tanh", "relu"])
def test_mlp_matches_the_formula(random_params, activation):
    mlp = MLP(F, C, activation)
    x = rand(B, T, C)
    p = random_params(mlp, x)
    h = np.einsum("btc,fc->btf", x.astype(np.float64), p["c_fc"]["kernel"]) + p["c_fc"]["bias"]
    act = {"gelu": lambda u: 0.5 * u * (1 + np.vectorize(math.erf)(u / np.sqrt(2))),
           "gelu_tanh": lambda u: 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u**3))),
           "relu": lambda u: np.maximum(u, 0)}[activation]
    want = np.einsum("btf,cf->btc", act(h), p["c_proj"]["kernel"]) + p["c_proj"]["bias"]
    np.testing.assert_allclose(jax.jit(mlp.apply)({"params": p}, x), want, atol=1e-5)


def sublayers(p, cross: bool):
    """The block's sublayers as plain functions of its params: the composition is what the block tests check."""
    ln = lambda name: (lambda x: LayerNorm().apply({"params": p[name]}, x))  # noqa: E731
    attn = lambda x: MultiHeadAttention(H, C, causal=True).apply({"params": p["attn"]}, x)  # noqa: E731
    mlp = lambda x: MLP(F, C).apply({"params": p["mlp"]}, x)  # noqa: E731
    out = {"ln_1": ln("ln_1"), "ln_2": ln("ln_2"), "attn": attn, "mlp": mlp}
    if cross:
        out["ln_cross"] = ln("ln_cross")
        out["cross"] = lambda x, c, m: MultiHeadAttention(H, C, cross=True).apply({"params": p["cross_attn"]}, x, c,
                                                                                 key_mask=m)
    return out


def test_pre_ln_block_is_x_plus_sublayer_of_ln_x(random_params):
    block = TransformerBlock(H, C, F, norm="pre", causal=True)
    x = rand(B, T, C)
    p = random_params(block, x)
    assert set(p) == {"attn", "ln_1", "mlp", "ln_2"} and set(p["attn"]) == {"c_attn", "c_proj"}
    assert set(p["mlp"]) == {"c_fc", "c_proj"}
    f = sublayers(p, cross=False)
    h = x + f["attn"](f["ln_1"](x))
    want = h + f["mlp"](f["ln_2"](h))
    np.testing.assert_allclose(jax.jit(block.apply)({"params": p}, x), want, atol=1e-5)


def test_post_ln_decoder_block_is_ln_of_x_plus_sublayer_of_x(random_params):
    block = TransformerBlock(H, C, F, norm="post", causal=True, cross_attention=True)
    x, context = rand(B, T, C), rand(B, S, C, seed=1)
    context_mask = np.arange(S)[None] < np.asarray([S, 2])[:, None]
    p = random_params(block, x, context, context_mask=context_mask)
    assert set(p) == {"attn", "ln_1", "cross_attn", "ln_cross", "mlp", "ln_2"}
    assert set(p["cross_attn"]) == {"q_attn", "kv_attn", "c_proj"}
    f = sublayers(p, cross=True)
    h = f["ln_1"](x + f["attn"](x))
    h = f["ln_cross"](h + f["cross"](h, context, context_mask))
    want = f["ln_2"](h + f["mlp"](h))
    y = jax.jit(lambda p, x, c, m: block.apply({"params": p}, x, c, context_mask=m))(p, x, context, context_mask)
    np.testing.assert_allclose(y, want, atol=1e-5)
    normalized = (np.asarray(y) - p["ln_2"]["bias"]) / p["ln_2"]["scale"]  # post-LN: the output is LN_2's
    np.testing.assert_allclose(normalized.mean(-1), 0, atol=1e-4)
    np.testing.assert_allclose(normalized.std(-1), 1, atol=1e-3)


def test_cached_decoder_block_equals_the_uncached_block_at_every_step(random_params):
    block = TransformerBlock(H, C, F, causal=True, cross_attention=True)
    x, context = rand(B, T, C), rand(B, S, C, seed=1)
    context_mask = np.arange(S)[None] < np.asarray([S, 3])[:, None]
    p = random_params(block, x, context, context_mask=context_mask)
    full = jax.jit(lambda p, x: block.apply({"params": p}, x, context, context_mask=context_mask))(p, x)
    cross_cache = block.apply({"params": p}, context, method=TransformerBlock.encode)
    step = jax.jit(lambda p, x, cache, i: block.apply({"params": p}, x, context_mask=context_mask, cache=cache,
                                                      cache_index=i, cross_cache=cross_cache))
    y, cache = step(p, x[:, :2], init_kv_cache(B, T, H, C // H), jnp.zeros((B,), jnp.int32))  # a 2-token prefill
    np.testing.assert_allclose(y, full[:, :2], atol=1e-5)
    for t in range(2, T):
        y, cache = step(p, x[:, t:t + 1], cache, jnp.full((B,), t, jnp.int32))
        np.testing.assert_allclose(y[:, 0], full[:, t], atol=1e-5, err_msg=f"step {t}")


def test_dropout_acts_on_the_residual_branches_only_in_training(random_params):
    block = TransformerBlock(H, C, F, causal=True, dropout=0.5)
    x = rand(B, T, C)
    p = random_params(block, x)
    apply = jax.jit(lambda p, x, train, key: block.apply({"params": p}, x, train=train, rngs={"dropout": key}),
                    static_argnums=2)
    eval_a, eval_b = apply(p, x, False, jax.random.key(0)), apply(p, x, False, jax.random.key(1))
    np.testing.assert_array_equal(eval_a, eval_b)
    train_a, train_b = apply(p, x, True, jax.random.key(0)), apply(p, x, True, jax.random.key(1))
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)


def test_bad_block_arguments_are_errors():
    x = jnp.ones((1, 2, C))
    with pytest.raises(ValueError, match="norm="):
        TransformerBlock(H, C, F, norm="sandwich").init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="cross_attention"):
        TransformerBlock(H, C, F).init(jax.random.key(0), x, x)
