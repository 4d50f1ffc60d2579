"""Checkpoints and parameter trees written by earlier code still load into today's models and give the same outputs.

The fixtures in tests/fixtures/compat/ were written once by tests/fixtures/write_compat.py (see its docstring and
the README there); the tests restore them through `Checkpointer` onto the abstract parameters of today's modules.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import gpt, rnn, seq2seq
from lmjax.ops.losses import token_cross_entropy
from lmjax.train.checkpoint import Checkpointer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COMPAT = FIXTURES / "compat"


def _writer():
    spec = importlib.util.spec_from_file_location("write_compat", FIXTURES / "write_compat.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outputs(name: str) -> dict[str, np.ndarray]:
    with np.load(COMPAT / "outputs.npz") as f:
        return {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(name + "/")}


def _model_config(name: str, cls):
    """Today's `cls` from the recorded model config (fields since removed, e.g. training-loop settings, dropped)."""
    model = json.loads((COMPAT / name / "config.json").read_text())["model"]
    return cls(**{f.name: model[f.name] for f in dataclasses.fields(cls) if f.name in model})


def _abstract(tree):
    """ShapeDtypeStructs on this process's first device: what `Checkpointer.restore` restores onto."""
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _restore(name: str, params, tmp_path: Path):
    """(step, restored state) of fixture `name`, its params restored onto today's abstract `params`.

    The rest of the saved state (step, optimizer state, rng) is restored onto the shapes the checkpoint records,
    except that every optimizer subtree shaped like the params (Adam's moments) must fit today's params too."""
    directory = tmp_path / name
    shutil.copytree(COMPAT / name / "checkpoints", directory)
    step_dir = max((p for p in directory.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    import orbax.checkpoint as ocp

    saved = ocp.StandardCheckpointer().metadata(step_dir / "state").item_metadata.tree
    wanted = _abstract(params)

    def fit(node):
        if isinstance(node, dict) and set(node) == set(params):
            return wanted
        if isinstance(node, dict):
            return {k: fit(v) for k, v in node.items()}
        if isinstance(node, (list, tuple)):
            return type(node)(fit(v) for v in node)
        return None if node is None else _abstract(jax.ShapeDtypeStruct(node.shape, node.dtype))

    target = {k: wanted if k == "params" else fit(v) for k, v in saved.items()}
    with Checkpointer(directory, best_metric=None) as ckpt:
        step, state, _ = ckpt.restore(target)
    return step, state


def _mean_ce(logits, targets) -> float:
    loss_sum, count = token_cross_entropy(logits, targets)
    return float(loss_sum / count)


def test_gpt_smoke_checkpoint_gives_the_recorded_logits(tmp_path):
    cfg = _model_config("gpt_smoke", gpt.GPTConfig)
    model, want = gpt.GPT(cfg), _outputs("gpt_smoke")
    tokens = jnp.asarray(want["tokens"])
    params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens[:, :-1]))["params"]
    step, state = _restore("gpt_smoke", params, tmp_path)
    assert step == 4 and int(state["step"]) == 4
    logits = model.apply({"params": state["params"]}, tokens[:, :-1])[..., : cfg.vocab_size]
    np.testing.assert_allclose(logits, want["logits"], atol=1e-5, rtol=0)
    assert abs(_mean_ce(logits, tokens[:, 1:]) - float(want["loss"])) < 1e-5


def test_rnn_smoke_checkpoint_gives_the_recorded_logits(tmp_path):
    cfg = _model_config("rnn_smoke", rnn.RNNConfig)
    model, want = rnn.RNNLM(cfg), _outputs("rnn_smoke")
    tokens, carry = jnp.asarray(want["tokens"]), rnn.init_carry(cfg, 2)
    params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens[:, :-1], carry))["params"]
    step, state = _restore("rnn_smoke", params, tmp_path)
    assert step == 4
    logits, _ = model.apply({"params": state["params"]}, tokens[:, :-1], carry)
    np.testing.assert_allclose(logits, want["logits"], atol=1e-5, rtol=0)
    assert abs(_mean_ce(logits, tokens[:, 1:]) - float(want["loss"])) < 1e-5


def test_seq2seq_params_give_the_recorded_logits(tmp_path):
    model, want = seq2seq.Seq2Seq(_model_config("seq2seq", seq2seq.Seq2SeqConfig)), _outputs("seq2seq")
    params = nn.meta.unbox(jax.eval_shape(lambda k: seq2seq.init_variables(model, k), jax.random.key(0)))["params"]
    _, state = _restore("seq2seq", params, tmp_path)
    src, src_mask, tgt = (jnp.asarray(want[k]) for k in ("src", "src_mask", "tgt"))
    logits = model.apply({"params": state["params"]}, src, src_mask, tgt[:, :-1])
    np.testing.assert_allclose(logits, want["logits"], atol=1e-5, rtol=0)
    assert abs(_mean_ce(logits, tgt[:, 1:]) - float(want["loss"])) < 1e-5


@pytest.mark.parametrize("family", ["gpt", "gpt_classifier", "rnn", "seq2seq"])
def test_parameter_paths_shapes_and_logical_axes_are_unchanged(family):
    recorded = json.loads((COMPAT / "param_trees.json").read_text())
    now = json.loads(json.dumps(_writer().param_trees()))  # tuples as lists, as recorded
    keys = [k for k in recorded if k.split("/")[0] == family]
    assert keys
    for key in keys:
        assert now[key] == recorded[key], key
