"""Flax Linen building blocks the model families share; the math is in each module's docstring.

Every parameter is fp32 and carries logical axis names from `lmjax.config.DEFAULT_RULES`; matmuls run in a module's
compute `dtype`; LayerNorm, softmax and the residual stream stay fp32.

- linear: `Linear` (torch's (out, in) kernel over several axes), `param`, `uniform`
- norm: `LayerNorm` (fp32)
- dropout: `Dropout` (flax's interface; one random byte per element)
- embeddings: `Embed`, `embedding` / `lookup` / `attend` (tables declared on the calling module), padded vocabularies,
  sinusoidal positions
- attention: `MultiHeadAttention` (self, causal, cross; padding masks; KV caches)
- transformer: `MLP`, `TransformerBlock` (pre-LN or post-LN, optional cross-attention)
- recurrent: `RecurrentLayer`, `StackedRecurrent`, `cell_params` (torch-layout LSTM / GRU / RNN parameters)
- charcnn: `CharCNN` (a word's vector from its characters: convolutions, highways, projection)
- mixing: `ScalarMix` (ELMo's learned mix of a pre-trained model's layers)
"""

from lmjax.layers.attention import KVCache, MultiHeadAttention, cached_mask, init_kv_cache, write_rows
from lmjax.layers.charcnn import CharCNN
from lmjax.layers.dropout import Dropout
from lmjax.layers.embeddings import (
    VOCAB_MULTIPLE,
    Embed,
    attend,
    embedding,
    lookup,
    mask_padded_vocab,
    padded_size,
    sinusoidal_positions,
)
from lmjax.layers.linear import Linear, param, uniform
from lmjax.layers.mixing import ScalarMix
from lmjax.layers.norm import LayerNorm
from lmjax.layers.recurrent import RecurrentLayer, StackedRecurrent, cell_params, projected
from lmjax.layers.transformer import ACTIVATIONS, MLP, TransformerBlock

__all__ = [
    "ACTIVATIONS",
    "CharCNN",
    "Dropout",
    "MLP",
    "VOCAB_MULTIPLE",
    "Embed",
    "KVCache",
    "LayerNorm",
    "Linear",
    "MultiHeadAttention",
    "RecurrentLayer",
    "ScalarMix",
    "StackedRecurrent",
    "TransformerBlock",
    "attend",
    "cached_mask",
    "cell_params",
    "embedding",
    "init_kv_cache",
    "lookup",
    "mask_padded_vocab",
    "padded_size",
    "param",
    "projected",
    "sinusoidal_positions",
    "uniform",
    "write_rows",
]
