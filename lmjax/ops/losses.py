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


def log_uniform_sample(key: jax.Array, num_sampled: int, vocab: int) -> jax.Array:
    """`num_sampled` ids drawn with replacement from the log-uniform (Zipfian) distribution over [0, vocab):

        Q(k) = log((k + 2) / (k + 1)) / log(vocab + 1)

    (TensorFlow's log_uniform_candidate_sampler), for a vocabulary sorted by falling frequency. Inverse CDF:
    k = floor(exp(u log(vocab + 1))) - 1, u ~ U[0, 1)."""
    u = jax.random.uniform(key, (num_sampled,))
    return jnp.clip(jnp.floor(jnp.exp(u * jnp.log(vocab + 1.0))).astype(jnp.int32) - 1, 0, vocab - 1)


def log_uniform_log_prob(ids: jax.Array, vocab: int) -> jax.Array:
    """log Q(ids) of `log_uniform_sample`."""
    ids = ids.astype(jnp.float32)
    return jnp.log(jnp.log((ids + 2.0) / (ids + 1.0)) / jnp.log(vocab + 1.0))


def sampled_softmax_cross_entropy(hidden: jax.Array, targets: jax.Array, kernel: jax.Array, bias: jax.Array,
                                  candidates: jax.Array, vocab: int, mask: jax.Array | None = None
                                  ) -> tuple[jax.Array, jax.Array]:
    """(Σ w·CE, Σ w) of the sampled softmax (Jean et al. 2015; TensorFlow's sampled_softmax_loss, with
    replacement): each token's softmax runs over its target and the S shared `candidates` only, every logit
    corrected by the log of its expected count,

        z_y = h·W_y + b_y - log(S Q(y)),   z_s = h·W_s + b_s - log(S Q(s)),   z_s = -inf where s = y
        CE = -log softmax([z_y, z_1..z_S])_0

    hidden [..., D], int targets [...], kernel [V, D], bias [V], candidates [S] from `log_uniform_sample(.., vocab)`.
    An unbiased-in-the-limit estimate of the full softmax's gradient at a cost of S rows instead of V."""
    hidden = hidden.astype(jnp.float32)
    num = candidates.shape[0]
    true = jnp.einsum("...d,...d->...", hidden, kernel[targets].astype(jnp.float32)) + bias[targets]
    true = true - jnp.log(num * jnp.exp(log_uniform_log_prob(targets, vocab)))
    sampled = hidden @ kernel[candidates].astype(jnp.float32).T + bias[candidates]
    sampled = sampled - jnp.log(num * jnp.exp(log_uniform_log_prob(candidates, vocab)))
    sampled = jnp.where(candidates == targets[..., None], -jnp.inf, sampled)  # accidental hits
    logits = jnp.concatenate([true[..., None], sampled], axis=-1)
    loss = -jax.nn.log_softmax(logits, axis=-1)[..., 0]
    if mask is None:
        return jnp.sum(loss), jnp.float32(loss.size)
    weights = jnp.asarray(mask).astype(jnp.float32)
    return jnp.sum(loss * weights), jnp.sum(weights)
