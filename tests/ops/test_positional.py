import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.ops import learned_positions, positions_from_mask, sinusoidal


@pytest.mark.parametrize("dim", [8, 7])
def test_sinusoidal_matches_vaswani_formula(dim):
    length, base = 50, 10000.0
    pe = np.asarray(sinusoidal(length, dim, base=base))
    assert pe.shape == (length, dim) and pe.dtype == np.float32
    for pos in (0, 1, 17, 49):
        for i in range((dim + 1) // 2):
            angle = pos / base ** (2 * i / dim)
            np.testing.assert_allclose(pe[pos, 2 * i], np.sin(angle), atol=2e-6)
            if 2 * i + 1 < dim:
                np.testing.assert_allclose(pe[pos, 2 * i + 1], np.cos(angle), atol=2e-6)


def test_sinusoidal_base_and_dtype():
    pe = sinusoidal(4, 6, base=2.0, dtype=jnp.bfloat16)
    assert pe.dtype == jnp.bfloat16
    # Column 2 (i = 1) has frequency 2^(-2/6).
    np.testing.assert_allclose(np.asarray(pe, np.float32)[3, 2], np.sin(3 * 2 ** (-2 / 6)), atol=1e-2)


def test_learned_positions_gathers_rows():
    table = jnp.arange(12.0).reshape(6, 2)
    out = learned_positions(table, jnp.array([[0, 5], [2, 2]]))
    np.testing.assert_array_equal(out, [[[0, 1], [10, 11]], [[4, 5], [4, 5]]])


def test_positions_from_mask_counts_valid_tokens():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 0, 1, 1]], bool)
    pos = jax.jit(positions_from_mask)(mask)
    assert pos.dtype == jnp.int32
    np.testing.assert_array_equal(pos, [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])
