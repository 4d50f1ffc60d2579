"""Layer-test fixtures: random parameters of a module, drawn with NumPy (fast), at O(1) scale."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest


def _random_params(module: nn.Module, *args, seed: int = 0, scale: float = 0.5, **kwargs):
    """`module`'s params for `module.init(key, *args, **kwargs)`, every leaf replaced by N(0, scale^2) float32."""
    abstract = jax.eval_shape(lambda k: module.init(k, *args, **kwargs), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: (scale * rng.standard_normal(x.shape)).astype(np.float32),
                        nn.meta.unbox(abstract)["params"])


@pytest.fixture
def random_params():
    return _random_params
