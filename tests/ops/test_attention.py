import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.ops import (
    causal_mask,
    combine_masks,
    dot_product_attention,
    lengths_to_mask,
    merge_heads,
    padding_mask,
    split_heads,
)

B, T, S, H, D = 2, 5, 7, 4, 8


def reference(q, k, v, mask=None, bias=None, scale=None):
    """float64 numpy: softmax(q k^T * scale + bias) v over unmasked keys; all-masked rows give 0."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    groups = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("bthd,bshd->bhts", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    mask = np.ones(logits.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask), logits.shape)
    logits = np.where(mask, logits, -np.inf)
    row_max = np.max(logits, axis=-1, keepdims=True)
    weights = np.where(mask, np.exp(logits - np.where(np.isfinite(row_max), row_max, 0.0)), 0.0)
    denom = weights.sum(-1, keepdims=True)
    probs = np.divide(weights, denom, out=np.zeros_like(weights), where=denom > 0)
    return np.einsum("bhts,bshd->bthd", probs, v)


def normal(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def qkv(t=T, s=S, heads=H, kv_heads=H):
    return normal((B, t, heads, D), 1), normal((B, s, kv_heads, D), 2), normal((B, s, kv_heads, D), 3)


def fully_masked_case():
    """Cross attention with padded keys and padded queries: row (b=1, t>=3) sees no key at all."""
    key_valid = lengths_to_mask(jnp.array([S, 4]), S)
    query_valid = lengths_to_mask(jnp.array([T, 3]), T)
    return combine_masks(padding_mask(key_valid), query_valid[:, None, :, None])


def bias_case():
    return 0.5 * normal((1, H, T, S), 7)


CASES = {
    "plain": dict(),
    "causal_self": dict(t=T, s=T, mask=causal_mask(T)),
    "causal_offset": dict(mask=causal_mask(T, S, offset=S - T)),
    "fully_masked_rows": dict(mask=fully_masked_case()),
    "bias": dict(bias=bias_case()),
    "bias_and_mask": dict(bias=bias_case(), mask=fully_masked_case()),
    "gqa": dict(kv_heads=2, mask=causal_mask(T, S, offset=S - T)),
    "mqa_scale": dict(kv_heads=1, scale=0.3),
    "mask_2d": dict(mask=jnp.tril(jnp.ones((T, S), bool), k=1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_implementations_match_float64_reference_and_each_other(case):
    c = dict(CASES[case])
    q, k, v = qkv(c.pop("t", T), c.pop("s", S), kv_heads=c.pop("kv_heads", H))

    @jax.jit
    def all_three(q, k, v):
        return {i: dot_product_attention(q, k, v, implementation=i, **c) for i in ("xla", "jax", "auto")}

    outs = all_three(q, k, v)
    expected = reference(q, k, v, **c)
    for out in outs.values():
        assert out.shape == q.shape and out.dtype == q.dtype
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs["xla"], outs["jax"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["xla", "jax"])
def test_fully_masked_rows_are_zero_with_finite_gradients(implementation):
    q, k, v = qkv()
    mask = fully_masked_case()
    cotangent = normal(q.shape, 4)

    def f(q, k, v):
        out = dot_product_attention(q, k, v, mask=mask, implementation=implementation)
        return jnp.sum(out * cotangent), out

    grads, out = jax.jit(jax.grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    out, grads = np.asarray(out), [np.asarray(g) for g in grads]
    assert np.all(out[1, 3:] == 0.0) and np.all(out[1, :3] != 0.0)
    assert all(np.all(np.isfinite(g)) for g in grads)
    # Nothing flows into a query that sees nothing, nor into a padded key.
    assert np.all(grads[0][1, 3:] == 0.0) and np.all(grads[1][1, 4:] == 0.0)


def test_bfloat16_inputs_give_bfloat16_outputs_close_to_fp32():
    q, k, v = qkv()
    mask = causal_mask(T, S, offset=S - T)

    @jax.jit
    def both(q, k, v):
        return [dot_product_attention(q, k, v, mask=mask, implementation=i) for i in ("xla", "jax")]

    expected = reference(*(x.astype(jnp.bfloat16).astype(jnp.float32) for x in (q, k, v)), mask=mask)
    for out in both(*(x.astype(jnp.bfloat16) for x in (q, k, v))):
        assert out.dtype == jnp.bfloat16
        np.testing.assert_allclose(out.astype(jnp.float32), expected, atol=3e-2)


def test_bad_arguments_raise():
    q, k, v = qkv(kv_heads=3, heads=4)
    with pytest.raises(ValueError, match="multiple"):
        dot_product_attention(q, k, v)
    q, k, v = qkv()
    with pytest.raises(ValueError, match="implementation"):
        dot_product_attention(q, k, v, implementation="flash")


def test_causal_mask():
    np.testing.assert_array_equal(causal_mask(4)[0, 0], np.tril(np.ones((4, 4), bool)))
    assert causal_mask(3, 6).shape == (1, 1, 3, 6)
    # Decoding 2 queries at absolute positions 3, 4 against a cache of 6 slots.
    np.testing.assert_array_equal(causal_mask(2, 6, offset=3)[0, 0], [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
    traced = jax.jit(lambda o: causal_mask(1, 5, offset=o))(jnp.int32(2))
    np.testing.assert_array_equal(traced[0, 0, 0], [1, 1, 1, 0, 0])


def test_padding_and_length_masks():
    valid = lengths_to_mask(jnp.array([2, 0, 3]), 3)
    np.testing.assert_array_equal(valid, [[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    m = padding_mask(jnp.array([[1, 0, 1]]))
    assert m.shape == (1, 1, 1, 3) and m.dtype == jnp.bool_
    np.testing.assert_array_equal(m[0, 0, 0], [True, False, True])


def test_combine_masks():
    assert combine_masks() is None and combine_masks(None, None) is None
    a = causal_mask(3)
    np.testing.assert_array_equal(combine_masks(None, a), a)
    pad = padding_mask(jnp.array([[1, 1, 0]]))
    np.testing.assert_array_equal(combine_masks(a, None, pad)[0, 0], np.tril(np.ones((3, 3), bool)) & [1, 1, 0])


def test_split_merge_heads():
    x = jnp.arange(2 * 3 * 12.0).reshape(2, 3, 12)
    y = split_heads(x, 4)
    assert y.shape == (2, 3, 4, 3)
    np.testing.assert_array_equal(y[:, :, 1], x[:, :, 3:6])
    np.testing.assert_array_equal(merge_heads(y), x)
    with pytest.raises(ValueError, match="divisible"):
        split_heads(x, 5)
