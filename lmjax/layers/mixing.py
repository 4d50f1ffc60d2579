"""`ScalarMix`: a downstream task's learned weighting of a pre-trained model's layers (`lmjax.ops.mixing`).

    layers [L, ..., D] -> γ Σ_j softmax(w)_j h_j     parameters w [L] (zeros: an equal mix at first), γ [] (1)

`top_only` skips the mix and returns the last layer (bilm-tf's use_top_only); `layer_norm` normalises every layer
over the unmasked positions first; the task adds `scalar_mix_l2(params["w"], l2_coef)` to its loss.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.layers.linear import param
from lmjax.ops import mixing


class ScalarMix(nn.Module):
    num_layers: int
    layer_norm: bool = False
    top_only: bool = False

    @nn.compact
    def __call__(self, layers: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        if layers.shape[0] != self.num_layers:
            raise ValueError(f"ScalarMix({self.num_layers}) got {layers.shape[0]} layers")
        if self.top_only:
            return layers[-1].astype(jnp.float32)
        w = param(self, "w", (self.num_layers,), ("layers",), nn.initializers.zeros)
        gamma = param(self, "gamma", (), (), nn.initializers.ones)
        return mixing.scalar_mix(layers, w, gamma, mask, layer_norm=self.layer_norm)
