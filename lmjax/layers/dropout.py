"""`Dropout`: flax's `nn.Dropout` interface over `lmjax.ops.dropout` (one random byte per element, rate rounded to a
multiple of 1/256), a quarter of the random words flax's Bernoulli draw needs."""

from __future__ import annotations

import flax.linen as nn
import jax

from lmjax.ops.dropout import dropout


class Dropout(nn.Module):
    """x -> dropout(x) with train (deterministic=False) and rngs={"dropout": key}; identity otherwise."""

    rate: float
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool = True) -> jax.Array:
        if deterministic or self.rate <= 0.0:
            return x
        return dropout(x, self.rate, self.make_rng(self.rng_collection))
