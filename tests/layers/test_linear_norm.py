import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.layers import LayerNorm, Linear, param, uniform


def test_linear_contracts_the_last_in_axes_with_an_out_in_kernel(random_params):
    layer = Linear((3, 2), ("qkv", "heads", "embed", "kv"), in_axes=2)
    x = np.random.default_rng(1).standard_normal((4, 5, 6)).astype(np.float32)
    p = random_params(layer, x)
    assert p["kernel"].shape == (3, 2, 5, 6) and p["bias"].shape == (3, 2)
    y = jax.jit(layer.apply)({"params": p}, x)
    want = np.einsum("bij,klij->bkl", x.astype(np.float64), p["kernel"]) + p["bias"]
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_linear_names_its_axes_and_computes_in_the_compute_dtype():
    layer = Linear((8,), ("mlp", "embed"), use_bias=False, dtype=jnp.bfloat16)
    variables = layer.init(jax.random.key(0), jnp.ones((2, 4)))
    kernel = variables["params"]["kernel"]
    assert isinstance(kernel, nn.Partitioned) and kernel.names == ("mlp", "embed") and "bias" not in variables["params"]
    assert kernel.value.dtype == jnp.float32 and abs(float(kernel.value.std()) - 0.02) < 0.01
    assert layer.apply(variables, jnp.ones((2, 4))).dtype == jnp.bfloat16


def test_param_declares_on_the_calling_module_with_the_given_init():
    class Flat(nn.Module):
        @nn.compact
        def __call__(self):
            return param(self, "w_x", (3, 4), ("hidden", "embed"), uniform(0.1))

    variables = Flat().init(jax.random.key(0))
    w = variables["params"]["w_x"]
    assert w.names == ("hidden", "embed") and np.abs(w.value).max() <= 0.1 and np.abs(w.value).max() > 0.05


def test_layer_norm_is_fp32_biased_variance_normalization(random_params):
    x = (3 + 2 * np.random.default_rng(0).standard_normal((2, 3, 16))).astype(np.float32)
    ln = LayerNorm(epsilon=1e-5)
    p = random_params(ln, x)
    y = jax.jit(ln.apply)({"params": p}, jnp.asarray(x, jnp.bfloat16))
    xb = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32), np.float64)  # what the layer saw
    want = (xb - xb.mean(-1, keepdims=True)) / np.sqrt(xb.var(-1, keepdims=True) + 1e-5) * p["scale"] + p["bias"]
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, want, atol=1e-5)


def test_layer_norm_without_bias_has_only_a_scale():
    variables = LayerNorm(use_bias=False).init(jax.random.key(0), jnp.ones((2, 8)))
    assert set(variables["params"]) == {"scale"} and variables["params"]["scale"].names == ("embed",)
    y = LayerNorm(use_bias=False).apply(variables, jnp.arange(8.0)[None])
    np.testing.assert_allclose(y.mean(), 0, atol=1e-6)
    np.testing.assert_allclose(y.std(), 1, atol=1e-4)
