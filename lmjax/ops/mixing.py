"""ELMo's scalar mix: a task's learned weighting of a pre-trained model's layers (Peters et al. 2018, eq. 1).

    ELMo_t = γ Σ_j s_j h_{j,t},   s = softmax(w)                 layers h_j [..., D], j = 0..L
    with layer_norm: h_j -> (h_j - μ_j) / sqrt(σ_j² + ε), μ_j, σ_j² over the unmasked positions and all D features
    of layer j (bilm-tf's do_layer_norm); l2_coef λ adds λ Σ_j w_j² to the task's loss (bilm-tf regularises w).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def masked_layer_norm(h: jax.Array, mask: jax.Array, eps: float = 1e-12) -> jax.Array:
    """(h - μ) / sqrt(σ² + ε) with μ, σ² over every feature of the positions where `mask` [...] is 1; h [..., D]."""
    h = h.astype(jnp.float32)
    m = mask.astype(jnp.float32)[..., None]
    n = jnp.maximum(jnp.sum(m) * h.shape[-1], 1.0)
    mean = jnp.sum(h * m) / n
    var = jnp.sum(((h - mean) * m) ** 2) / n
    return (h - mean) / jnp.sqrt(var + eps)


def scalar_mix(layers: jax.Array, weights: jax.Array, gamma: jax.Array, mask: jax.Array | None = None, *,
               layer_norm: bool = False) -> jax.Array:
    """γ Σ_j softmax(w)_j h_j: layers [L, ..., D], weights [L], gamma [] -> [..., D] in fp32; with `layer_norm`,
    each layer normalised over `mask` [...] first (all positions when mask is None)."""
    layers = layers.astype(jnp.float32)
    if layer_norm:
        mask = jnp.ones(layers.shape[1:-1]) if mask is None else mask
        layers = jnp.stack([masked_layer_norm(h, mask) for h in layers])
    s = jax.nn.softmax(weights.astype(jnp.float32))
    return gamma * jnp.einsum("l,l...d->...d", s, layers)


def scalar_mix_l2(weights: jax.Array, coef: float) -> jax.Array:
    """λ Σ_j w_j²: the penalty bilm-tf adds to a task's loss for its mixing weights."""
    return coef * jnp.sum(jnp.square(weights.astype(jnp.float32)))
