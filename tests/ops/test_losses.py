import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.ops import negative_sampling_loss, shared_negative_sampling_loss, token_cross_entropy

V = 11
RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((4, 6, V)) * 3
TARGETS = RNG.integers(0, V, (4, 6))
WEIGHTS = RNG.random((4, 6)) < 0.7


def np_cross_entropy(logits, targets, eps=0.0):
    """float64: -Σ_v y_v log_softmax(logits)_v with y = (1 - eps) onehot + eps / V."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    y = (1 - eps) * np.eye(logits.shape[-1])[targets] + eps / logits.shape[-1]
    return -(y * log_probs).sum(-1)


ce = jax.jit(token_cross_entropy, static_argnames="label_smoothing")


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_matches_log_softmax_math(eps):
    loss, count = ce(jnp.asarray(LOGITS, jnp.float32), TARGETS, WEIGHTS, label_smoothing=eps)
    expected = np_cross_entropy(LOGITS, TARGETS, eps)
    np.testing.assert_allclose(loss, (expected * WEIGHTS).sum(), rtol=1e-5)
    assert count == WEIGHTS.sum()
    loss, count = ce(jnp.asarray(LOGITS, jnp.float32), TARGETS, label_smoothing=eps)
    np.testing.assert_allclose(loss, expected.sum(), rtol=1e-5)
    assert count == TARGETS.size


def test_float_weights_and_bfloat16_logits_computed_in_fp32():
    weights = RNG.random((4, 6))
    logits = jnp.asarray(LOGITS, jnp.bfloat16)
    loss, count = ce(logits, TARGETS, weights)
    assert loss.dtype == jnp.float32 and count.dtype == jnp.float32
    expected = np_cross_entropy(np.asarray(logits, np.float64), TARGETS)
    np.testing.assert_allclose(loss, (expected * weights).sum(), rtol=1e-5)
    np.testing.assert_allclose(count, weights.sum(), rtol=1e-6)


def test_halves_sum_to_the_whole():
    logits, mask = jnp.asarray(LOGITS, jnp.float32), jnp.asarray(WEIGHTS)
    whole = ce(logits, TARGETS, mask)
    halves = [ce(logits[s], TARGETS[s], mask[s]) for s in (slice(0, 2), slice(2, 4))]
    np.testing.assert_allclose(halves[0][0] + halves[1][0], whole[0], rtol=1e-6)
    assert halves[0][1] + halves[1][1] == whole[1]


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_masked_out_of_range_targets_give_no_nan(eps):
    weights = WEIGHTS.copy()
    weights[0, 0] = False
    targets = np.where(weights, TARGETS, -1)  # padding id -1 ...
    targets[0, 0] = V + 3  # ... and one past the vocabulary

    def total(logits):
        return ce(logits, targets, weights, label_smoothing=eps)[0]

    loss, grad = jax.value_and_grad(total)(jnp.asarray(LOGITS, jnp.float32))
    np.testing.assert_allclose(loss, (np_cross_entropy(LOGITS, TARGETS, eps) * weights).sum(), rtol=1e-5)
    assert np.all(np.isfinite(grad)) and np.all(np.asarray(grad)[~weights] == 0.0)


def np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def test_negative_sampling_loss():
    b, k, d = 5, 3, 4
    c, o, n = RNG.standard_normal((b, d)) * 2, RNG.standard_normal((b, d)) * 2, RNG.standard_normal((b, k, d)) * 2
    loss = jax.jit(negative_sampling_loss)(*(jnp.asarray(x, jnp.float32) for x in (c, o, n)))
    expected = -np_log_sigmoid((c * o).sum(-1)) - np_log_sigmoid(-np.einsum("bd,bkd->bk", c, n)).sum(-1)
    assert loss.shape == (b,)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_shared_negative_sampling_loss_equals_per_example_with_shared_negatives():
    b, k, d = 5, 3, 4
    c, o, n = RNG.standard_normal((b, d)) * 2, RNG.standard_normal((b, d)) * 2, RNG.standard_normal((k, d)) * 2
    loss = jax.jit(shared_negative_sampling_loss)(*(jnp.asarray(x, jnp.float32) for x in (c, o, n)))
    expected = -np_log_sigmoid((c * o).sum(-1)) - np_log_sigmoid(-(c @ n.T)).sum(-1)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_negative_sampling_is_stable_for_large_scores():
    c = jnp.full((1, 2), 100.0)
    loss = negative_sampling_loss(c, -c, c[:, None])  # scores ±20000: log σ would underflow if computed naively
    np.testing.assert_allclose(loss, [40000.0], rtol=1e-6)
