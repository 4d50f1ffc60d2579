import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import DEFAULT_RULES
from lmjax.layers import Embed, embedding, lookup, padded_size, sinusoidal_positions


def test_padded_size_rounds_up_to_the_multiple():
    assert [padded_size(n) for n in (1, 65, 128, 129, 50257)] == [128, 128, 128, 256, 50304]
    assert padded_size(7, 1) == 7


def test_token_embedding_pads_the_table_and_its_tied_logits_are_minus_inf_there():
    embed = Embed(65, 8, pad_to=128)
    ids = jnp.asarray([[0, 64, 3]])
    variables = embed.init(jax.random.key(0), ids)
    table = variables["params"]["embedding"]
    assert table.names == ("vocab", "embed") and table.value.shape == (128, 8)
    np.testing.assert_array_equal(embed.apply(variables, ids), np.asarray(table.value)[np.asarray(ids)])
    h = np.random.default_rng(0).standard_normal((1, 3, 8)).astype(np.float32)
    logits = embed.apply(variables, h, method=Embed.attend)
    assert logits.shape == (1, 3, 128) and logits.dtype == jnp.float32
    np.testing.assert_allclose(logits[..., :65], h @ np.asarray(table.value)[:65].T, atol=1e-5)
    assert np.all(np.isneginf(logits[..., 65:]))


def test_position_and_segment_tables_use_replicated_logical_axes():
    rules = dict(DEFAULT_RULES)
    for rows, axes in ((16, ("positions", "embed")), (2, ("segments", "embed"))):
        variables = Embed(rows, 4, axes=axes).init(jax.random.key(0), jnp.zeros((1, 3), jnp.int32))
        table = variables["params"]["embedding"]
        assert table.value.shape == (rows, 4) and table.names == axes and rules[axes[0]] is None


def test_embedding_declares_the_table_on_the_calling_module():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, ids):
            return lookup(embedding(self, "wte", 10, 4), ids)

    variables = Model().init(jax.random.key(0), jnp.zeros((2, 3), jnp.int32))
    assert set(variables["params"]) == {"wte"} and variables["params"]["wte"].value.shape == (10, 4)


def test_sinusoidal_positions_follow_vaswani():
    positions = jnp.asarray([[0, 3, 7], [1, 1, 2]])
    pe = sinusoidal_positions(positions, 6, max_len=8)
    pos = np.asarray(positions, np.float64)[..., None]
    angle = pos / 10000.0 ** (np.arange(0, 6, 2) / 6)
    want = np.stack([np.sin(angle), np.cos(angle)], -1).reshape(2, 3, 6)  # sin, cos interleaved
    np.testing.assert_allclose(pe, want, atol=1e-5)
