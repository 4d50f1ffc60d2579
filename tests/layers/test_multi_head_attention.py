import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.layers import MultiHeadAttention, init_kv_cache

B, T, S, C, H = 2, 5, 7, 12, 3
D = C // H


def reference(p, x, mask, context=None):
    """softmax(q k^T / sqrt(D), masked) v, then the output projection, in float64 NumPy; mask bool [B, T, S]."""
    x = np.asarray(x, np.float64)
    if context is None:
        qkv = np.einsum("btc,khdc->kbthd", x, p["c_attn"]["kernel"])
        q, k, v = qkv + np.asarray(p["c_attn"]["bias"])[:, None, None]
    else:
        q = np.einsum("btc,hdc->bthd", x, p["q_attn"]["kernel"]) + p["q_attn"]["bias"]
        k, v = np.einsum("bsc,khdc->kbshd", np.asarray(context, np.float64), p["kv_attn"]["kernel"]) \
            + np.asarray(p["kv_attn"]["bias"])[:, None, None]
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs = probs / probs.sum(-1, keepdims=True)
    out = np.einsum("bhts,bshd->bthd", probs, v)
    return np.einsum("bthd,chd->btc", out, p["c_proj"]["kernel"]) + p["c_proj"]["bias"]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_causal_self_attention_with_key_padding_matches_the_formula(random_params):
    mha = MultiHeadAttention(H, C, causal=True)
    x = rand(B, T, C)
    p = random_params(mha, x)
    assert p["c_attn"]["kernel"].shape == (3, H, D, C) and p["c_proj"]["kernel"].shape == (C, H, D)
    key_mask = np.ones((B, T), bool)
    key_mask[1, 1:3] = False  # row 1: keys 1 and 2 are padding (key 0 stays, so no query row is empty)
    y = jax.jit(lambda p, x, m: mha.apply({"params": p}, x, key_mask=m))(p, x, key_mask)
    want = reference(p, x, np.tril(np.ones((T, T), bool))[None] & key_mask[:, None, :])
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_cross_attention_matches_the_formula_and_its_encoded_cache(random_params):
    mha = MultiHeadAttention(H, C, cross=True)
    x, context = rand(B, T, C), rand(B, S, 8, seed=1)  # the encoder may be narrower
    p = random_params(mha, x, context)
    assert p["q_attn"]["kernel"].shape == (H, D, C) and p["kv_attn"]["kernel"].shape == (2, H, D, 8)
    context_mask = np.arange(S)[None] < np.asarray([S, 3])[:, None]
    y = jax.jit(lambda p, x, c, m: mha.apply({"params": p}, x, c, key_mask=m))(p, x, context, context_mask)
    np.testing.assert_allclose(y, reference(p, x, np.broadcast_to(context_mask[:, None], (B, T, S)), context),
                               atol=1e-5)
    kv = mha.apply({"params": p}, context, method=MultiHeadAttention.encode)
    y_cached, same = mha.apply({"params": p}, x, key_mask=context_mask, cache=kv)
    np.testing.assert_allclose(y_cached, y, atol=1e-6)
    assert same is kv


def test_padded_encoder_positions_change_nothing(random_params):
    mha = MultiHeadAttention(H, C, cross=True)
    x, context = rand(B, T, C), rand(B, S, C, seed=1)
    p = random_params(mha, x, context)
    lengths = np.asarray([S, 4])
    apply = jax.jit(lambda p, x, c, m: mha.apply({"params": p}, x, c, key_mask=m))
    y = apply(p, x, context, np.arange(S)[None] < lengths[:, None])
    # Longer padding, holding garbage, and garbage in row 1's padded slots: the same output.
    noisy = np.concatenate([context, 100 * rand(B, 3, C, seed=2)], 1)
    noisy[1, 4:] = 1e3 * rand(noisy.shape[1] - 4, C, seed=3)
    y_padded = apply(p, x, noisy, np.arange(S + 3)[None] < lengths[:, None])
    np.testing.assert_allclose(y_padded, y, atol=1e-5)


def test_cached_decoding_equals_uncached_attention_at_every_step(random_params):
    """Row 0 prefills 4 tokens and decodes from slot 4; row 1 keeps only 2 of its prefilled tokens and decodes from
    slot 2 (overwriting 2 and 3): each step's output is causal attention over that row's sequence so far."""
    mha = MultiHeadAttention(H, C, causal=True)
    seqs = rand(B, 8, C)
    p = random_params(mha, seqs)
    step = jax.jit(lambda p, x, cache, i: mha.apply({"params": p}, x, cache=cache, cache_index=i))
    _, cache = step(p, jnp.asarray(np.stack([seqs[0, :4], seqs[1, :4]])), init_kv_cache(B, 8, H, D),
                    jnp.zeros((B,), jnp.int32))
    start = np.asarray([4, 2])
    rows = {0: list(seqs[0, :4]), 1: list(seqs[1, :2])}
    for n in range(4):
        tokens = np.stack([seqs[0, 4 + n], seqs[1, 2 + n] * -1])[:, None]  # row 1 continues differently
        y, cache = step(p, tokens, cache, jnp.asarray(start + n, jnp.int32))
        for b in range(B):
            rows[b].append(tokens[b, 0])
            seq = np.stack(rows[b])[None]
            want = reference(p, seq, np.tril(np.ones((len(seq[0]),) * 2, bool))[None])[0, -1]
            np.testing.assert_allclose(y[b, 0], want, atol=1e-5, err_msg=f"row {b}, step {n}")


def test_non_causal_cache_sees_only_the_written_slots(random_params):
    mha = MultiHeadAttention(H, C)
    x = rand(B, T, C)
    p = random_params(mha, x)
    cached = jax.jit(lambda p, x, cache, i: mha.apply({"params": p}, x, cache=cache, cache_index=i)[0])
    y = cached(p, x, init_kv_cache(B, 9, H, D), jnp.zeros((B,), jnp.int32))
    np.testing.assert_allclose(y, reference(p, x, np.ones((B, T, T), bool)), atol=1e-5)


def test_cross_attention_cannot_be_causal():
    with pytest.raises(ValueError, match="cannot be causal"):
        MultiHeadAttention(H, C, cross=True, causal=True).init(jax.random.key(0), jnp.ones((1, 2, C)),
                                                               jnp.ones((1, 3, C)))
