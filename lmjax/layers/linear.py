"""Linear maps with torch's kernel layout, and the initializers the model families share.

    y = x W^T + b,   x [..., *in] -> y [..., *out],   W [*out, *in],   b [*out]

`Linear` contracts the last `in_axes` axes of x with the trailing axes of W, so multi-axis maps need no reshapes:
GPT's fused attention projection is W [3, H, D, C] (x [B, T, C] -> [B, T, 3, H, D]) and its output projection is
W [C, H, D] with in_axes=2 ([B, T, H, D] -> [B, T, C]). Stored (out, in), XLA's CPU weight-gradient matmuls need no
transposes: a train step of `shakespeare_char` ran about 15% faster than with Flax's (in, out).

The kernel and bias are fp32 parameters; the matmul runs in the compute `dtype` (bf16 in mixed precision).
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

Initializer = Callable[..., jax.Array]


def uniform(scale: float) -> Initializer:
    """Initializer U(-scale, scale) (Sutskever et al.'s and Zaremba et al.'s recurrent nets)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def param(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str | None, ...],
          init: Initializer) -> jax.Array:
    """An fp32 parameter `name` of `module` with logical axis names `axes` (one per dimension of `shape`).

    Layers that must keep a flat parameter layout (a model's own tables, a cell's weights under a prefix) declare
    their parameters on the calling module with this, so paths stay `name`, not `submodule/name`."""
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


class Linear(nn.Module):
    """y = x W^T + b, contracting the last `in_axes` axes of x [..., *in] with W [*out, *in] (torch's layout).

    `axes` names the kernel's axes, out then in; the bias takes the out part. The kernel starts ~ N(0, std^2)
    unless `kernel_init` is given (an initializer of the (*out, *in) kernel); the bias starts at zero.
    """

    out_shape: tuple[int, ...]
    axes: tuple[str, ...]
    in_axes: int = 1
    std: float = 0.02
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Initializer | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        in_shape = x.shape[x.ndim - self.in_axes:]
        init = self.kernel_init or nn.initializers.normal(self.std)
        kernel = param(self, "kernel", (*self.out_shape, *in_shape), self.axes, init)
        contract = (tuple(range(x.ndim - self.in_axes, x.ndim)), tuple(range(len(self.out_shape), kernel.ndim)))
        y = lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
        if self.use_bias:
            bias = param(self, "bias", self.out_shape, self.axes[: len(self.out_shape)], nn.initializers.zeros)
            y = y + bias.astype(self.dtype)
        return y
