"""Layer normalization (Ba et al., 2016), computed in fp32 whatever the compute dtype.

    y = (x - mean(x)) / sqrt(var(x) + eps) * scale + bias      over the last axis

with var the biased (1/C) variance, as torch.nn.LayerNorm, computed as max(mean(x^2) - mean(x)^2, 0). The input is
cast to fp32 first and the output stays fp32, so the residual stream and the statistics never see bf16 rounding.
Parameters `scale` (ones) and `bias` (zeros; absent with use_bias=False) carry the logical name "embed".
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lmjax.layers.linear import param


class LayerNorm(nn.Module):
    """x [..., C] -> fp32 [..., C], normalized over C."""

    epsilon: float = 1e-5
    use_bias: bool = True
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        # nn.LayerNorm's operations in nn.LayerNorm's order (the same jaxpr): equivalent orders, such as a two-pass
        # variance or the scale applied after normalizing, made a shakespeare_char train step 10-20% slower on CPU.
        square = lax.square(x)
        mean, mean_of_square = jnp.mean(x, axis=-1), jnp.mean(square, axis=-1)
        var = jnp.maximum(0.0, mean_of_square - lax.square(mean))
        mean, var = mean[..., None], var[..., None]
        y = x - mean
        mul = lax.rsqrt(var + self.epsilon)
        shape, features = (1,) * (x.ndim - 1) + x.shape[-1:], x.shape[-1:]
        mul = mul * param(self, "scale", features, (self.axis_name,), nn.initializers.ones).reshape(shape)
        y = y * mul
        if self.use_bias:
            y = y + param(self, "bias", features, (self.axis_name,), nn.initializers.zeros).reshape(shape)
        return y
