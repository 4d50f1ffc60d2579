"""A word's vector from its characters: convolutions max-pooled over the word, then highway layers (Kim et al.
2016; ELMo's token encoder, bilm-tf).

    e_{1..C} = E[chars]                                   char embeddings [C, d] (C = max_chars, padding included)
    f_k = relu(max_p (K_k * e)_p + b_k)                   one value per filter k; K_k [n_k, d, w_k] as torch.nn.Conv1d
    x = [f_1 ; ... ; f_K]                                 [sum n_k]
    g = σ(W_g x + b_g);  x' = g ⊙ relu(W_h x + b_h) + (1 - g) ⊙ x      per highway layer

Max-pooling runs over the C - w + 1 valid positions of each width, the padding characters included, as bilm-tf;
relu after the max equals the max after relu.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def conv_max(chars: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """max_p (K * e)_p + b: char embeddings [..., C, d], kernel [n, d, w] (torch's Conv1d layout), bias [n] ->
    [..., n], over the C - w + 1 valid positions."""
    width = kernel.shape[-1]
    positions = chars.shape[-2] - width + 1
    windows = jnp.stack([chars[..., i:i + positions, :] for i in range(width)], axis=-1)  # [..., P, d, w]
    return jnp.max(jnp.einsum("...pdw,ndw->...pn", windows, kernel), axis=-2) + bias


def char_cnn(chars: jax.Array, kernels: list[jax.Array], biases: list[jax.Array]) -> jax.Array:
    """[relu(conv_max(e, K_k, b_k)) for each filter width k], concatenated: [..., C, d] -> [..., sum n_k]."""
    return jnp.concatenate([jax.nn.relu(conv_max(chars, k, b)) for k, b in zip(kernels, biases, strict=True)],
                           axis=-1)


def highway(x: jax.Array, w_h: jax.Array, b_h: jax.Array, w_g: jax.Array, b_g: jax.Array) -> jax.Array:
    """One highway layer: g ⊙ relu(W_h x + b_h) + (1 - g) ⊙ x, g = σ(W_g x + b_g); W [D, D] as (out, in)."""
    g = jax.nn.sigmoid(x @ w_g.T + b_g)
    return g * jax.nn.relu(x @ w_h.T + b_h) + (1.0 - g) * x
