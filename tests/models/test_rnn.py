import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lmjax.config import ConfigError, get_preset
from lmjax.models import rnn

V, H, L = 13, 8, 2
CFG = rnn.RNNConfig(vocab_size=V, hidden=H, n_layer=L, init_scale=0.3)
MODEL = rnn.RNNLM(CFG)


@functools.cache
def params():
    variables = jax.jit(MODEL.init)(jax.random.key(0), jnp.zeros((2, 5), jnp.int32), rnn.init_carry(CFG, 2))
    return jax.tree.map(np.asarray, nn.meta.unbox(variables)["params"])


@jax.jit
def forward(p, tokens, carry):
    return MODEL.apply({"params": p}, tokens, carry)


def test_every_param_has_logical_axes_and_uniform_init():
    variables = jax.eval_shape(MODEL.init, jax.random.key(0), jnp.zeros((2, 5), jnp.int32), rnn.init_carry(CFG, 2))
    boxed = jax.tree_util.tree_leaves(variables["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert boxed and all(isinstance(x, nn.Partitioned) and len(x.names) == x.value.ndim for x in boxed)
    leaves = jax.tree_util.tree_leaves(params())
    assert all(np.abs(x).max() <= CFG.init_scale for x in leaves)
    assert {k for k in params()} == {"embed", "layer_0", "layer_1", "out_kernel", "out_bias"}
    assert params()["layer_0"]["w_ih"].shape == (4 * H, H)


def test_matches_torch_lstm_with_copied_weights():
    p = params()
    tokens = np.random.default_rng(0).integers(0, V, (3, 7))
    h0 = np.random.default_rng(1).standard_normal((2, L, 3, H)).astype(np.float32)
    carry = tuple((jnp.asarray(h0[0, i]), jnp.asarray(h0[1, i])) for i in range(L))
    logits, final = forward(p, jnp.asarray(tokens), carry)

    lstm = torch.nn.LSTM(H, H, num_layers=L, batch_first=True)
    with torch.no_grad():
        for i in range(L):
            for ours, theirs in (("w_ih", "weight_ih"), ("w_hh", "weight_hh"), ("b_ih", "bias_ih"),
                                 ("b_hh", "bias_hh")):
                getattr(lstm, f"{theirs}_l{i}").copy_(torch.from_numpy(p[f"layer_{i}"][ours]))
        x = torch.from_numpy(p["embed"])[torch.from_numpy(tokens)]
        out, (h, c) = lstm(x, (torch.from_numpy(h0[0]), torch.from_numpy(h0[1])))
        ref = out @ torch.from_numpy(p["out_kernel"]).T + torch.from_numpy(p["out_bias"])
    np.testing.assert_allclose(logits, ref.numpy(), atol=1e-5)
    for i in range(L):
        np.testing.assert_allclose(final[i][0], h[i].numpy(), atol=1e-5)
        np.testing.assert_allclose(final[i][1], c[i].numpy(), atol=1e-5)


def test_carried_state_over_two_halves_equals_one_long_sequence():
    p = params()
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, V, (2, 10)))
    zero = rnn.init_carry(CFG, 2)
    whole, final = forward(p, tokens, zero)
    first, mid = forward(p, tokens[:, :5], zero)
    second, final2 = forward(p, tokens[:, 5:], mid)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), final, final2)
    # ...and a reset row forgets its state while the other row keeps it.
    reset = rnn.reset_carry(mid, jnp.asarray([True, False]))
    assert all(float(jnp.abs(h[0]).max()) == 0 and float(jnp.abs(h[1]).max()) > 0 for h in jax.tree.leaves(reset))


def _tbptt_engine(tokens, vocab, *, batch, seq_len, hidden=16, eval_batch=1, init_scale=CFG.init_scale, **optim):
    """An Engine of the rnn family's tbptt task on a token array (ContiguousStream training, one-stream eval)."""
    from lmjax.data import ContiguousStream, eval_windows
    from lmjax.train.engine import Engine
    from lmjax.train.task import Data, get_task

    sets = [f"model.vocab_size={vocab}", f"model.hidden={hidden}", f"model.init_scale={init_scale}", f"data.batch_size={batch}",
            f"data.seq_len={seq_len}", f"data.eval_batch_size={eval_batch}", *(f"optim.{k}={v}" for k, v in optim.items())]
    cfg = get_preset("zaremba_small", sets)
    data = Data(tokenizer=None, vocab_size=vocab, train=lambda i, n: ContiguousStream(tokens, batch, seq_len),
                eval=lambda i, n, split="validation", max_batches=-1: eval_windows(tokens, eval_batch, seq_len))
    return Engine(cfg, data=data, task=get_task(cfg).build(cfg, data))


def test_stream_eval_with_carry_equals_loss_of_the_whole_stream():
    """The engine's evaluation of a stateful task carries the state across batches: one stream of 20 targets in
    windows of 6 scores exactly as the whole sequence at once."""
    tokens = np.random.default_rng(3).integers(0, V, 21)
    engine = _tbptt_engine(tokens, V, batch=2, seq_len=6, hidden=CFG.hidden)
    p = params()
    out = engine.evaluate(p)
    logits, _ = forward(p, jnp.asarray(tokens[None, :-1]), rnn.init_carry(CFG, 1))
    ref = -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(tokens[None, 1:, None]), -1).sum()
    assert out["eval_tokens"] == 20
    np.testing.assert_allclose(out["eval_loss"] * 20, ref, rtol=1e-5)


def test_zaremba_presets_schedule_halves_after_epoch_four():
    from lmjax.train.optim import make_schedule

    cfg = get_preset("zaremba_small", ["optim.decay_every=10", "optim.decay_start=40"])
    schedule = make_schedule(cfg.optim, cfg.train.steps)
    lrs = [float(schedule(s)) for s in (0, 39, 40, 49, 50, 129)]
    assert lrs == [1.0, 1.0, 0.5, 0.5, 0.25, 0.5 ** 9]


def test_tbptt_task_learns_a_periodic_stream():
    """SGD with the state carried across 3-token batches learns a period-5 sequence no 3-token window determines;
    from zeros every batch (no carry) it cannot get below the ambiguity of the windows."""
    stream = np.tile([0, 1, 2, 1, 3], 200).astype(np.int32)
    engine = _tbptt_engine(stream, 5, batch=2, seq_len=3)
    state, batches, losses = engine.init_state(), engine.data.train(0, 1), []
    for _ in range(6):
        state, metrics = engine.train_steps(state, engine.stack_batches(batches, 25))
        losses.append(float(np.mean(metrics["loss"])))
    assert state.carry is not None and losses[-1] < 0.1 < losses[0], losses


def test_carry_resets_at_an_epoch_start():
    """ContiguousStream marks an epoch's first batch `reset`: the engine restarts those rows from zeros, so the loss
    of the first batch of epoch 2 equals that of epoch 1 under the same parameters (lr 1e-30 keeps them)."""
    stream = np.random.default_rng(0).integers(0, 7, 2 * 3 * 4 + 2).astype(np.int32)  # 3 batches per epoch
    engine = _tbptt_engine(stream, 7, batch=2, seq_len=4, lr=1e-30)  # updates below the parameters' ulp
    state, batches = engine.init_state(), engine.data.train(0, 1)
    state, metrics = engine.train_steps(state, engine.stack_batches(batches, 6))
    loss = np.asarray(metrics["loss"])
    assert loss[0] == loss[3] and loss[1] == loss[4] and loss[0] != loss[1]


def test_engine_trains_rnn_smoke(tmp_path):
    from lmjax.train.loop import train

    cfg = get_preset("rnn_smoke", [f"train.workdir={tmp_path}", "train.progress=false", "train.tensorboard=false",
                                   "train.plot=false", "train.steps=10", "train.eval_every=10"])
    result = train(cfg)
    assert result.step == 10 and np.isfinite(result.eval_loss) and result.eval_loss < np.log(65)


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="model.cell"):
        rnn.model_from_config(get_preset("rnn_smoke", ["model.cell=peephole_lstm"]), 10)
    from lmjax.train.task import get_task

    with pytest.raises(ConfigError, match="choose one of lm, tbptt"):
        get_task(get_preset("rnn_smoke", ["task=classify"]))


def test_presets_are_zarembas():
    for name, hidden, dropout, epochs in (("zaremba_small", 200, 0.0, 13), ("zaremba_medium", 650, 0.5, 39),
                                          ("zaremba_large", 1500, 0.65, 55)):
        cfg = get_preset(name)
        assert (cfg.model.hidden, cfg.model.n_layer, cfg.model.dropout, cfg.train.steps) == (hidden, 2, dropout,
                                                                                              epochs * 1327)
        assert (cfg.data.batch_size, cfg.data.seq_len, cfg.optim.name, cfg.optim.lr) == (20, 35, "sgd", 1.0)
        assert (cfg.task, cfg.optim.schedule, cfg.optim.loss_norm, cfg.optim.decay_every) == ("tbptt", "step",
                                                                                             "sequence", 1327)
