"""GPT-1-style classification head: last real token, frozen trunk, learning, and the auxiliary LM loss."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.config import DataConfig, OptimConfig, RunConfig, TrainConfig, get_preset
from lmjax.models.gpt import FREEZE_TRUNK, GPT, GPTClassifier, GPTConfig, make_classifier_task, make_task
from lmjax.ops.losses import token_cross_entropy
from lmjax.train.optim import make_optimizer
from lmjax.train.task import Data

V, T, B = 20, 12, 16
CFG = GPTConfig(vocab_size=V, block_size=T, n_layer=2, n_head=2, n_embd=32)
DATA = Data(tokenizer=None, vocab_size=V, train=None, info={"num_classes": 2})


def run_cfg(model=CFG, **optim):
    return RunConfig(name="t", model=model, data=DataConfig(seq_len=T, batch_size=B),
                     optim=OptimConfig(**{"lr": 3e-3, "warmup_steps": 0, "schedule": "constant", **optim}),
                     train=TrainConfig(steps=100))


@functools.cache
def task(lm_weight=0.0, model=CFG):
    return make_classifier_task(run_cfg(dataclasses.replace(model, aux_lm_weight=lm_weight)), DATA)


@functools.cache
def init_params():
    """Unboxed params of the classifier (the same tree whatever lm_weight); compiled once for the module."""
    t = task()
    example = {k: jnp.zeros(v.shape, v.dtype) for k, v in t.example_batch.items()}
    return nn.meta.unbox(jax.jit(t.init)(jax.random.key(0), example))["params"]


def synthetic(seed=0, n=B):
    """Label = whether token 5 occurs among a row's real tokens; rows of 3..T real tokens, then junk padding."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, T + 1, n)
    tokens = rng.integers(6, V, (n, T))
    labels = rng.integers(0, 2, n)
    for row in np.flatnonzero(labels):
        tokens[row, rng.integers(0, lengths[row])] = 5
    return {"inputs": jnp.asarray(tokens, jnp.int32), "lengths": jnp.asarray(lengths, jnp.int32),
            "labels": jnp.asarray(labels, jnp.int32)}


def evaluate(t, params, batch):
    return jax.jit(lambda p, b: t.loss_fn(p, b, None, False))(params, batch)


def train(t, params, optim_cfg, steps, seed=0):
    """A plain functional loop over the task's loss: one new synthetic batch per step; returns params and the last
    batch's accuracy."""
    tx, _ = make_optimizer(optim_cfg, steps, params)

    @jax.jit
    def step(params, opt_state, batch, key):
        (loss, (count, aux)), grads = jax.value_and_grad(
            lambda p: (lambda s, c, a: (s / c, (c, a)))(*t.loss_fn(p, batch, key, True)), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, aux["accuracy"] / count

    opt_state = tx.init(params)
    for i in range(steps):
        params, opt_state, acc = step(params, opt_state, synthetic(seed * 1000 + i), jax.random.key(i))
    return params, float(acc)


def test_head_reads_the_last_real_token():
    t = task()
    params = init_params()
    batch = synthetic()
    apply = jax.jit(lambda p, x, n: t.model.apply({"params": p}, x, n))
    logits = apply(params, batch["inputs"], batch["lengths"])
    assert logits.shape == (B, 2) and logits.dtype == jnp.float32
    # Anything after a row's last real token, padding included, leaves its logits unchanged ...
    after = np.arange(T)[None, :] >= np.asarray(batch["lengths"])[:, None]
    junk = jnp.where(after, (batch["inputs"] + 7) % V, batch["inputs"])
    np.testing.assert_array_equal(apply(params, junk, batch["lengths"]), logits)
    # ... and equals the head applied to the plain GPT's final hidden state at column length - 1.
    hidden = jax.jit(lambda p, x: GPT(CFG).apply({"params": p}, x, outputs="hidden"))(params["gpt"], batch["inputs"])
    last = hidden[jnp.arange(B), batch["lengths"] - 1]
    head = params["head"]
    np.testing.assert_allclose(last @ head["kernel"].T + head["bias"], logits, atol=1e-5)
    # A different last token does change them.
    changed = batch["inputs"].at[jnp.arange(B), batch["lengths"] - 1].set(5)
    assert not np.allclose(apply(params, changed, batch["lengths"]), logits)


def test_params_hold_a_gpt_and_a_head_with_logical_axes():
    t = task()
    boxed = jax.eval_shape(t.init, jax.random.key(0), t.example_batch)["params"]
    assert set(boxed) == {"gpt", "head"}
    assert boxed["head"]["kernel"].names == ("classes", "embed")
    plain = jax.eval_shape(GPT(CFG).init, jax.random.key(0), jnp.zeros((1, T), jnp.int32))["params"]
    assert jax.tree.structure(nn.meta.unbox(boxed["gpt"])) == jax.tree.structure(nn.meta.unbox(plain))


def test_frozen_trunk_stays_bit_identical_while_the_head_trains():
    t = task()
    params = init_params()
    optim_cfg = run_cfg(freeze=FREEZE_TRUNK).optim
    trained, _ = train(t, params, optim_cfg, steps=5)
    for a, b in zip(jax.tree.leaves(params["gpt"]), jax.tree.leaves(trained["gpt"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(params["head"]["kernel"], trained["head"]["kernel"])


def test_classifier_learns_a_separable_task():
    t = task()
    params, _ = train(t, init_params(), run_cfg().optim, steps=40)
    batch = synthetic(seed=99, n=64)  # unseen rows
    loss_sum, count, aux = evaluate(t, params, batch)
    assert float(aux["accuracy"] / count) > 0.9, float(aux["accuracy"] / count)


def test_lm_weight_zero_is_the_classification_loss_and_positive_adds_the_lm_mean():
    params = init_params()
    batch = {**synthetic(), "lengths": synthetic()["lengths"].at[0].set(0)}  # row 0 is an empty (padding) row
    logits, lm_logits = jax.jit(lambda p, b: GPTClassifier(CFG).apply({"params": p}, b["inputs"], b["lengths"],
                                                                       lm=True))(params, batch)
    real = batch["lengths"] > 0
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"])
    cls_sum = float(jnp.sum(jnp.where(real, ce, 0)))

    loss_sum, count, aux = evaluate(task(0.0), params, batch)
    assert float(count) == B - 1 and "lm_loss" not in aux
    np.testing.assert_allclose(float(loss_sum), cls_sum, rtol=1e-6)
    np.testing.assert_allclose(float(aux["cls_loss"]), cls_sum, rtol=1e-6)

    mask = np.arange(1, T)[None, :] < np.asarray(batch["lengths"])[:, None]
    lm_sum, lm_count = token_cross_entropy(lm_logits[:, :-1, :V], batch["inputs"][:, 1:], mask)
    loss_sum, count, aux = evaluate(task(0.5), params, batch)
    np.testing.assert_allclose(float(loss_sum), cls_sum + 0.5 * float(lm_sum / lm_count) * (B - 1), rtol=1e-5)
    np.testing.assert_allclose(float(aux["lm_loss"] / count), float(lm_sum / lm_count), rtol=1e-6)


def test_engine_trains_the_classifier_task():
    from lmjax.train.engine import Engine

    cfg = dataclasses.replace(run_cfg(dataclasses.replace(CFG, aux_lm_weight=0.5), freeze=FREEZE_TRUNK),
                              train=TrainConfig(steps=3, seed=0))
    batches = iter(lambda: {k: np.asarray(v) for k, v in synthetic().items()}, None)
    data = Data(tokenizer=None, vocab_size=V, train=lambda i, n: batches, info={"num_classes": 2})
    engine = Engine(cfg, data=data, task=make_classifier_task(cfg, data))
    state = engine.init_state()
    before = jax.device_get(state.params)
    state, metrics = engine.train_steps(state, engine.stack_batches(batches, 3))
    assert metrics["loss"].shape == (3,) and np.all(np.isfinite(metrics["loss"]))
    assert 0 <= float(metrics["accuracy"][-1]) <= 1 and float(metrics["lm_loss"][-1]) > 0
    after = jax.device_get(state.params)
    np.testing.assert_array_equal(before["gpt"]["wte"], after["gpt"]["wte"])
    assert not np.array_equal(before["head"]["kernel"], after["head"]["kernel"])


def test_flops_count_the_lm_projection_only_with_the_auxiliary_loss():
    head = 6 * (2 * CFG.n_embd + 2)
    lm = make_task(run_cfg(), DATA).flops_per_token
    assert task(0.5).flops_per_token == lm + head
    assert task(0.0).flops_per_token == lm + head - 6 * CFG.padded_vocab_size * CFG.n_embd


def test_gpt_imdb_preset_builds():
    cfg = get_preset("gpt_imdb")
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.block_size) == (4, 256, 128)
    assert cfg.data.dataset == "imdb" and cfg.data.seq_len <= cfg.model.block_size


def test_outputs_argument_is_checked():
    with pytest.raises(ValueError, match="outputs"):
        GPT(CFG).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32), outputs="features")
