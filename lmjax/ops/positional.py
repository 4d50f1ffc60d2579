"""Position encodings: fixed sinusoids (Vaswani et al., 2017), learned tables, positions of left-padded rows."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def sinusoidal(length: int, dim: int, *, base: float = 10000.0, dtype: Any = jnp.float32) -> jax.Array:
    """[length, dim] with PE[pos, 2i] = sin(pos / base^(2i/dim)) and PE[pos, 2i+1] = cos(pos / base^(2i/dim)).

    Sines and cosines interleave along the feature axis; an odd dim ends with a sine. Computed in fp32.
    """
    inv_freq = base ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)  # [ceil(dim/2)]
    angles = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    pe = jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(length, -1)
    return pe[:, :dim].astype(dtype)


def learned_positions(table: jax.Array, positions: jax.Array) -> jax.Array:
    """table[positions]: a [max_len, D] table gathered at int positions [...] -> [..., D]."""
    return table[positions]


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """int32 [B, T]: the index of each valid token among the valid tokens of its row (cumsum - 1).

    For a left-padded prompt the first real token gets position 0; padding positions get 0 too (never -1, which
    would wrap around in a gather); their outputs are masked anyway.
    """
    mask = jnp.asarray(mask).astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0).astype(jnp.int32)
