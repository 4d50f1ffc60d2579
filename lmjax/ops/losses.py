"""Losses as sums (and counts), so that gradient accumulation and sharding divide once, exactly. All math in fp32."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def token_cross_entropy(
    logits: jax.Array,
    targets: jax.Array,
    mask: jax.Array | None = None,
    *,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
    """(Σ w·CE, Σ w) over tokens: logits [..., V], int targets [...], weights `mask` [...] (None = all ones).

    CE = -Σ_v y_v log softmax(logits)_v with y = (1 - eps) onehot(target) + eps / V (eps = label_smoothing).
    Targets are clipped into [0, V) first, so padding ids such as -1 under a zero weight give no NaN.
    """
    logits = logits.astype(jnp.float32)
    vocab = logits.shape[-1]
    targets = jnp.clip(targets, 0, vocab - 1)
    if label_smoothing:
        labels = optax.smooth_labels(jax.nn.one_hot(targets, vocab, dtype=jnp.float32), label_smoothing)
        loss = optax.softmax_cross_entropy(logits, labels)
    else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    if mask is None:
        return jnp.sum(loss), jnp.float32(loss.size)
    weights = jnp.asarray(mask).astype(jnp.float32)
    return jnp.sum(loss * weights), jnp.sum(weights)


def negative_sampling_loss(center: jax.Array, context: jax.Array, negatives: jax.Array) -> jax.Array:
    """Skip-gram negative sampling, per example [B]: -log σ(c·o) - Σ_k log σ(-c·n_k).

    center c [B, D], context o [B, D], negatives n [B, K, D] (each example its own K negatives).
    """
    center = center.astype(jnp.float32)
    pos = jnp.einsum("bd,bd->b", center, context.astype(jnp.float32))
    neg = jnp.einsum("bd,bkd->bk", center, negatives.astype(jnp.float32))
    return -jax.nn.log_sigmoid(pos) - jnp.sum(jax.nn.log_sigmoid(-neg), axis=-1)


def shared_negative_sampling_loss(center: jax.Array, context: jax.Array, negatives: jax.Array) -> jax.Array:
    """As `negative_sampling_loss`, with negatives [K, D] shared by the batch: scores are one [B,D]x[D,K] matmul."""
    center = center.astype(jnp.float32)
    pos = jnp.einsum("bd,bd->b", center, context.astype(jnp.float32))
    neg = center @ negatives.astype(jnp.float32).T
    return -jax.nn.log_sigmoid(pos) - jnp.sum(jax.nn.log_sigmoid(-neg), axis=-1)
