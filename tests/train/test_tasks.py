"""The engine's task features: the registry, evaluation metrics and hooks, pretrained initialisation, carried state
(with bit-exact resume), per-sequence loss normalisation and the step schedule."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import ConfigError, get_preset
from lmjax.ops.losses import token_cross_entropy
from lmjax.train.engine import Engine, best_mode
from lmjax.train.loop import train
from lmjax.train.task import Data, get_task, list_tasks
import toy


def quiet(cfg, workdir, **train_kw):
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, workdir=str(workdir), progress=False, tensorboard=False, plot=False, sample_tokens=0, **train_kw))


def test_every_preset_names_a_registered_task():
    from lmjax.config import list_presets

    for name in list_presets():
        cfg = get_preset(name)
        assert get_task(cfg).family == cfg.family, name
    assert {("gpt", "lm"), ("gpt", "classify"), ("rnn", "tbptt"), ("seq2seq", "translate")} <= set(list_tasks())
    with pytest.raises(ConfigError, match="not a task of the 'gpt' family: choose one of classify, doc_lm, lm"):
        get_task(get_preset("gpt_smoke", ["task=tbptt"]))


def _accuracy_task(cfg, data):
    """The toy LM with token accuracy as an aux sum and a corpus-level hook."""
    task = toy.make_task(cfg, data)
    model = task.model

    def loss_fn(params, batch, rng, train):
        rngs = {"dropout": rng} if train else {}
        logits = model.apply({"params": params}, batch["inputs"], train=train, rngs=rngs)
        loss_sum, count = token_cross_entropy(logits, batch["targets"], batch.get("mask"))
        return loss_sum, count, {"accuracy": jnp.sum(jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32)}

    calls = []

    def corpus_metrics(engine, params, split):
        calls.append(1)
        return {"hook": 42.0}

    return dataclasses.replace(task, loss_fn=loss_fn, corpus_metrics=corpus_metrics), calls


def test_evaluation_reports_every_aux_sum_as_a_mean_and_the_hook():
    cfg = toy.toy_config()
    data = toy.make_data(cfg)
    task, calls = _accuracy_task(cfg, data)
    engine = Engine(cfg, data=data, task=task)
    params = engine.init_state().params
    out = engine.evaluate(params)
    correct = total = 0
    for batch in data.eval(0, 1):
        logits = task.model.apply({"params": jax.device_get(params)}, batch["inputs"])
        correct += int((np.argmax(logits, -1) == batch["targets"]).sum())
        total += batch["targets"].size
    assert out["eval_tokens"] == total and calls == [1] and out["eval_hook"] == 42.0
    np.testing.assert_allclose(out["eval_accuracy"], correct / total, rtol=1e-6)
    assert best_mode(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, best_metric="eval_accuracy"))) \
        == "max" and best_mode(cfg) == "min"


def test_best_metric_must_be_reported(tmp_path):
    cfg = quiet(toy.toy_config(), tmp_path, steps=5, eval_every=5, best_metric="eval_bleu")
    with pytest.raises(ConfigError, match="eval_bleu.*is not among the evaluation's metrics"):
        train(cfg)


def test_init_from_loads_a_subtree_of_another_runs_parameters(tmp_path):
    source = train(quiet(toy.toy_config(), tmp_path / "a", steps=10, eval_every=0, checkpoint_every=10))
    trained = jax.device_get(source.state.params)
    fresh = jax.device_get(Engine(toy.toy_config()).init_state().params)
    cfg = quiet(toy.toy_config(), tmp_path / "b", init_from=str(tmp_path / "a"), init_source="up",
                init_target="up")
    started = jax.device_get(Engine(cfg).init_state().params)
    jax.tree.map(np.testing.assert_array_equal, started["up"], trained["up"])
    jax.tree.map(np.testing.assert_array_equal, started["head"], fresh["head"])  # the rest: fresh init
    assert not np.array_equal(trained["head"]["kernel"], fresh["head"]["kernel"])
    whole = quiet(toy.toy_config(), tmp_path / "c", init_from=str(tmp_path / "a" / "checkpoints"))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(Engine(whole).init_state().params), trained)
    bad = quiet(toy.toy_config(), tmp_path / "d", init_from=str(tmp_path / "a"), init_source="up",
                init_target="down")
    with pytest.raises(ConfigError, match="do not fit train.init_target='down'"):
        Engine(bad).init_state()
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        Engine(quiet(toy.toy_config(), tmp_path / "e", init_from=str(tmp_path / "nothing"))).init_state()


def test_exported_parameters_initialise_a_run_as_the_run_itself(tmp_path):
    """`lmjax export` keeps the parameters only (and the run's files), and init_from reads the export exactly."""
    from lmjax.cli import main as cli
    from lmjax.train.pretrained import export_params

    source = train(quiet(toy.toy_config(), tmp_path / "a", steps=6, eval_every=0, checkpoint_every=6))
    (tmp_path / "a" / "corpus.json").write_text("{}")
    step, out = export_params(tmp_path / "a", tmp_path / "exported")
    assert step == 6 and (out / "corpus.json").is_file() and (out / "config.json").is_file()
    full = sum(f.stat().st_size for f in (tmp_path / "a" / "checkpoints").rglob("*") if f.is_file())
    kept = sum(f.stat().st_size for f in (out / "checkpoints").rglob("*") if f.is_file())
    assert kept < full  # no optimizer state
    cfg = quiet(toy.toy_config(), tmp_path / "b", init_from=str(out), init_source="up", init_target="up")
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(Engine(cfg).init_state().params)["up"],
                 jax.device_get(source.state.params)["up"])
    assert cli(["export", str(tmp_path / "nothing"), str(tmp_path / "x")]) != 0  # one-line error, no traceback
    with pytest.raises(ConfigError, match="is the run directory itself"):
        export_params(tmp_path / "a", tmp_path / "a")


def test_carried_state_run_resumes_bit_exactly(tmp_path):
    """tbptt_smoke stopped at step 10 and resumed gives every later loss of an uninterrupted run, bit for bit: the
    carry is in the checkpoint, the stream position too."""
    def cfg(workdir):
        return quiet(get_preset("tbptt_smoke"), workdir, checkpoint_every=5, eval_every=0)

    whole = train(cfg(tmp_path / "whole"))
    train(cfg(tmp_path / "split"), stop_after=10)
    resumed = train(cfg(tmp_path / "split"))
    assert [step for step, _ in resumed.losses] == list(range(11, 21))
    assert dict(resumed.losses) == {s: v for s, v in whole.losses if s > 10}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.state.carry),
                 jax.device_get(whole.state.carry))


def test_sequence_loss_norm_scales_the_gradient_by_tokens_per_row():
    """optim.loss_norm=sequence divides the summed gradient by the rows instead of the tokens: T times larger."""
    norms = {}
    for norm in ("token", "sequence"):
        cfg = toy.toy_config()
        cfg = dataclasses.replace(cfg, optim=dataclasses.replace(cfg.optim, loss_norm=norm, clip_norm=0.0))
        engine = Engine(cfg)
        _, metrics = engine.train_steps(engine.init_state(), engine.stack_batches(engine.data.train(0, 1), 1))
        norms[norm] = float(metrics["grad_norm"][0])
    np.testing.assert_allclose(norms["sequence"] / norms["token"], toy.toy_config().data.seq_len, rtol=1e-5)


def test_classify_task_prepares_its_data_and_reports_accuracy(tmp_path, shared_data):
    cfg = get_preset("gpt_classify_smoke", [f"data.data_dir={shared_data}", f"train.workdir={tmp_path}", "train.progress=false",
                                             "train.tensorboard=false", "train.plot=false", "train.steps=4",
                                             "train.eval_every=4"])
    result = train(cfg)
    info = result.engine.data.info
    assert info["num_classes"] == 2 and info["train_size"] == 64 and info["eval_size"] == 872
    assert 0 <= result.eval_metrics["eval_accuracy"] <= 1 and result.eval_metrics["eval_tokens"] == 872
    assert result.eval_metrics["eval_lm_loss"] > 0


def test_data_builders_take_the_prepared_tokenizer():
    """Tasks get prepared data, not a vocabulary size: a task builder reads sizes and ids from `Data`."""
    cfg = get_preset("gpt_smoke")
    task = get_task(cfg).build(cfg, Data(tokenizer=None, vocab_size=50, train=None))
    assert task.model.config.vocab_size == 50


def test_tagging_corpus_metrics_score_the_whole_split_in_example_order():
    """Batches come out of order (sorted by length); a word with no prediction (label -1 past a row's end) is wrong
    for the accuracy and "O" for the phrases; UPOS-style tags get no phrase scores."""
    import contextlib
    import types

    from lmjax.scoring import chunk_f1
    from lmjax.train.task import tagging_corpus_metrics

    names = ("B-NP", "I-NP", "B-VP", "O")
    gold = [[0, 1, 2, 3], [0, 3]]
    # batch rows: example 1, then example 0 whose last word got no prediction
    batch = {"labels": np.array([[0, 3, -1, -1], [0, 1, 2, -1]])}
    predicted = np.array([[0, 3, 1, 1], [0, 1, 0, 0]])
    info = {"labels": names, "gold": {"validation": gold}, "ordered": lambda split: [([1, 0], batch)]}
    engine = types.SimpleNamespace(activate=contextlib.nullcontext)
    got = tagging_corpus_metrics(Data(None, 0, None, info={**info, "scheme": "iob"}), lambda p, b: predicted)(
        engine, None)
    want = chunk_f1([[names[t] for t in g] for g in gold], [["B-NP", "I-NP", "B-NP", "O"], ["B-NP", "O"]])
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert {k: got[k] for k in ("precision", "recall", "f1")} == {k: want[k] for k in ("precision", "recall", "f1")}
    assert 0 < got["f1"] < 1
    tags = Data(None, 0, None, info={**info, "scheme": "tags"})
    assert tagging_corpus_metrics(tags, lambda p, b: predicted)(engine, None) == {"accuracy": pytest.approx(4 / 6)}
    assert tagging_corpus_metrics(tags, lambda p, b: predicted, accuracy=False)(engine, None) == {}
    assert tagging_corpus_metrics(tags, lambda p, b: predicted)(engine, None, split="test") == {}
