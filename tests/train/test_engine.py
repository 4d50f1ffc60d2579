"""The engine on a toy model: loss falls, determinism, gradient accumulation is exact, freezing, schedules, errors."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np
import optax
import pytest

from lmjax.config import ConfigError, MeshConfig, OptimConfig
from lmjax.train.engine import Engine
from lmjax.train.optim import make_optimizer, make_schedule
from toy import toy_config


def run_steps(engine, steps, per_call=1):
    state = engine.init_state()
    it = engine.data.train(0, 1)
    losses = []
    for _ in range(steps // per_call):
        state, m = engine.train_steps(state, engine.stack_batches(it, per_call))
        losses += list(np.asarray(m["loss"]))
    return state, np.array(losses)


def test_one_step_runs_and_counts_tokens():
    engine = Engine(toy_config())
    state = engine.init_state()
    state, m = engine.train_steps(state, engine.stack_batches(engine.data.train(0, 1), 1))
    assert int(state.step) == 1
    assert float(m["count"][0]) == 16 * 8
    assert np.isfinite(m["loss"]).all() and float(m["grad_norm"][0]) > 0


def test_fifty_steps_loss_falls():
    engine = Engine(toy_config())
    state, losses = run_steps(engine, 50, per_call=10)
    assert losses[-5:].mean() < 0.85 * losses[:5].mean()
    assert engine.evaluate(state.params)["eval_loss"] < losses[0]


def test_same_seed_bit_identical_and_steps_per_call_invariant():
    _, a = run_steps(Engine(toy_config()), 20, per_call=1)
    _, b = run_steps(Engine(toy_config()), 20, per_call=1)
    _, c = run_steps(Engine(toy_config()), 20, per_call=10)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-6)  # same math, differently fused


def test_gradient_accumulation_equals_big_batch():
    base = toy_config()
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, dropout=0.0),
                               optim=dataclasses.replace(base.optim, name="sgd", clip_norm=0.0))
    big = Engine(base)
    acc_cfg = dataclasses.replace(base, data=dataclasses.replace(base.data, batch_size=8),
                                  optim=dataclasses.replace(base.optim, grad_accum=2))
    acc = Engine(acc_cfg)
    batch = next(big.data.train(0, 1))
    s_big, m_big = big.train_steps(big.init_state(), {k: v[None, None] for k, v in batch.items()})
    s_acc, m_acc = acc.train_steps(acc.init_state(), {k: v.reshape(1, 2, 8, -1) for k, v in batch.items()})
    np.testing.assert_allclose(m_big["loss"], m_acc["loss"], rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(s_big.params), jax.tree_util.tree_leaves(s_acc.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_freeze_by_path_pattern():
    cfg = toy_config()
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, freeze=("^head/", "embed")))
    engine = Engine(cfg)
    init = jax.device_get(engine.init_state().params)
    state, _ = run_steps(engine, 5)
    after = jax.device_get(state.params)
    np.testing.assert_array_equal(init["head"]["kernel"], after["head"]["kernel"])
    np.testing.assert_array_equal(init["embed"], after["embed"])
    assert not np.array_equal(init["up"]["kernel"], after["up"]["kernel"])


def test_frozen_parameters_get_no_gradient_and_leave_the_loss_alone():
    """Frozen leaves enter through stop_gradient: same loss, and grad_norm covers the trained leaves only."""
    cfg = toy_config()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=0.0))
    frozen_cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, freeze=("^head/", "embed")))
    out = {}
    for name, c in (("free", cfg), ("frozen", frozen_cfg)):
        engine = Engine(c)
        batches = engine.stack_batches(engine.data.train(0, 1), 1)
        state = engine.init_state()
        _, m = engine.train_steps(state, batches)
        out[name] = float(m["loss"][0]), float(m["grad_norm"][0])
    params = engine.init_state().params  # the train step donated `state`
    _, grads = engine.loss_and_grads(params, jax.tree_util.tree_map(lambda x: x[0, 0], batches))
    trained = [g for path, g in jax.tree_util.tree_leaves_with_path(jax.device_get(grads))
               if "head" not in jax.tree_util.keystr(path) and "embed" not in jax.tree_util.keystr(path)]
    assert out["free"][0] == pytest.approx(out["frozen"][0], rel=1e-6)
    assert out["frozen"][1] == pytest.approx(float(np.sqrt(sum(np.sum(np.square(g)) for g in trained))), rel=1e-4)
    assert out["frozen"][1] < out["free"][1]


def test_freeze_everything_is_an_error():
    cfg = toy_config()
    cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, freeze=(".*",)))
    with pytest.raises(ConfigError, match="nothing would train"):
        Engine(cfg)


@pytest.mark.parametrize("name", ["cosine", "linear", "inverse_sqrt", "constant"])
def test_schedules_warm_up_then_decay(name):
    cfg = OptimConfig(lr=1.0, end_lr=0.1, warmup_steps=10, schedule=name)
    s = make_schedule(cfg, total_steps=110)
    assert float(s(0)) == 0.0
    assert float(s(5)) == pytest.approx(0.5)
    assert float(s(10)) == pytest.approx(1.0)
    end = {"cosine": 0.1, "linear": 0.1, "inverse_sqrt": np.sqrt(10 / 110), "constant": 1.0}[name]
    assert float(s(110)) == pytest.approx(end, rel=1e-5)


@pytest.mark.parametrize("name", ["adamw", "sgd", "adagrad"])
def test_optimizers_build(name):
    tx, _ = make_optimizer(OptimConfig(name=name), 10)
    params = {"w": np.ones((2, 2), np.float32)}
    updates, _ = tx.update({"w": np.ones((2, 2), np.float32)}, tx.init(params), params)
    assert np.all(np.asarray(optax.tree.norm(updates)) > 0)


def test_bad_optimizer_names_the_choices():
    with pytest.raises(ConfigError, match="adamw, sgd, adagrad"):
        make_optimizer(OptimConfig(name="adam_typo"), 10)


def test_mesh_that_does_not_cover_devices():
    cfg = dataclasses.replace(toy_config(), mesh=MeshConfig(data=3))
    with pytest.raises(ConfigError, match="product is 1"):
        Engine(cfg)


def test_resumed_run_reuses_its_saved_tokenizer(tmp_path):
    """A run with a checkpoint encodes with the tokenizer it saved, not a refitted one (WordPiece refits can renumber)."""
    from lmjax.config import get_preset
    from lmjax.data.tokenizers import CharTokenizer
    from lmjax.data.pipeline import lm_data as build
    from lmjax.train.rundir import saved_tokenizer

    def lm_data(cfg):
        return build(cfg, saved_tokenizer(cfg))

    cfg = get_preset("gpt_smoke", [f"train.workdir={tmp_path}"])
    fitted = lm_data(cfg).tokenizer
    saved = CharTokenizer.fit("only these letters: abc", unk="?")
    saved.save(tmp_path / "tokenizer")
    assert lm_data(cfg).tokenizer.vocab_size == fitted.vocab_size  # no checkpoint yet: fit afresh
    (tmp_path / "checkpoints" / "20").mkdir(parents=True)
    assert lm_data(cfg).tokenizer.vocab_size == saved.vocab_size != fitted.vocab_size
    no_resume = get_preset("gpt_smoke", [f"train.workdir={tmp_path}", "train.resume=false"])
    assert lm_data(no_resume).tokenizer.vocab_size == fitted.vocab_size
