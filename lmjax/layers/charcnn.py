"""ELMo's character-level token encoder as a layer: `lmjax.ops.charcnn`'s convolutions and highways, then a
linear projection.

    chars [..., C] int -> E[chars] [..., C, d] -> char_cnn -> highway x n -> W_p x + b_p [..., P]

Parameters: char_embed [V_c, d] (row 0, the padding character, is a row like any other, as bilm-tf), conv_i
{kernel [n_i, d, w_i] (torch.nn.Conv1d's layout), bias [n_i]}, highway_i {w_h, b_h, w_g, b_g} (W [D, D] out-in,
b_g starts at -2 so every highway starts close to carrying its input, as bilm-tf), proj {kernel [P, D], bias [P]}.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.layers.embeddings import embedding, lookup
from lmjax.layers.linear import Linear, param, uniform
from lmjax.ops import charcnn


class CharCNN(nn.Module):
    """chars [..., C] int -> [..., proj] fp32 word vectors."""

    char_vocab: int
    char_dim: int
    filters: tuple[tuple[int, int], ...]  # (width, number of filters) per convolution
    highway: int
    proj: int

    @nn.compact
    def __call__(self, chars: jax.Array) -> jax.Array:
        table = embedding(self, "char_embed", self.char_vocab, self.char_dim, axes=("chars", None),
                          init=uniform(1.0))
        e = lookup(table, chars, "chars")
        kernels, biases = [], []
        for i, (width, n) in enumerate(self.filters):
            scale = 1.0 / math.sqrt(self.char_dim * width)  # torch.nn.Conv1d's default bound
            kernels.append(param(self, f"conv_{i}_kernel", (n, self.char_dim, width), ("filters", None, None),
                                 uniform(scale)))
            biases.append(param(self, f"conv_{i}_bias", (n,), ("filters",), uniform(scale)))
        x = charcnn.char_cnn(e, kernels, biases)
        width = x.shape[-1]
        init = nn.initializers.normal(math.sqrt(1.0 / width))
        for i in range(self.highway):
            w_h = param(self, f"highway_{i}_w_h", (width, width), ("filters", None), init)
            b_h = param(self, f"highway_{i}_b_h", (width,), ("filters",), nn.initializers.zeros)
            w_g = param(self, f"highway_{i}_w_g", (width, width), ("filters", None), init)
            b_g = param(self, f"highway_{i}_b_g", (width,), ("filters",), nn.initializers.constant(-2.0))
            x = charcnn.highway(x, w_h, b_h, w_g, b_g)
        return Linear((self.proj,), ("embed", "filters"), std=math.sqrt(1.0 / width), name="proj")(x)
