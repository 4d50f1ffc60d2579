"""Train state and the pure step functions the engine jit-compiles.

One optimizer step over A micro-batches (gradient accumulation) computes

    g = (sum_a grad loss_sum_a) / (sum_a count_a)

so the mean is exact whatever the split into micro-batches and devices. `multi_step` scans K such steps inside one
compiled call, with the K x A micro-batches already on device, which removes per-step dispatch overhead.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax

from lmjax.train.task import Task


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32[2] base key; step keys are fold_in(rng, step), so resume needs no RNG bookkeeping


def step_key(state: TrainState) -> jax.Array:
    return jax.random.fold_in(state.rng, state.step)


def make_train_step(task: Task, tx: optax.GradientTransformation, schedule: optax.Schedule, frozen=None):
    """`train_step(state, batches) -> (state, metrics)` for batches whose leaves are [A, B, ...] (A micro-batches).

    `frozen`: a pytree of bools like params (or None); frozen leaves enter the loss through `stop_gradient`, so
    their gradients are zeros XLA never computes (a frozen trunk under a trained head costs no backward pass), and
    the logged grad_norm covers the trained parameters only. The optimizer must also leave them alone."""

    def micro(params, batch, rng):
        if frozen is not None:
            params = jax.tree_util.tree_map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
        loss_sum, count, aux = task.loss_fn(params, batch, rng, True)
        return loss_sum, (count, aux)

    grad_fn = jax.value_and_grad(micro, has_aux=True)

    def train_step(state: TrainState, batches):
        key = step_key(state)
        n_micro = jax.tree_util.tree_leaves(batches)[0].shape[0]

        def accumulate(carry, xs):
            i, batch = xs
            (loss_sum, (count, aux)), grads = grad_fn(state.params, batch, jax.random.fold_in(key, i))
            new = (grads, loss_sum, count, aux)
            return jax.tree_util.tree_map(jnp.add, carry, new), None

        first = jax.tree_util.tree_map(lambda x: x[0], batches)
        (loss_sum, (count, aux)), grads = grad_fn(state.params, first, jax.random.fold_in(key, 0))
        if n_micro > 1:  # static: accumulation is a scan over the remaining micro-batches
            rest = jax.tree_util.tree_map(lambda x: x[1:], batches)
            (grads, loss_sum, count, aux), _ = jax.lax.scan(
                accumulate, (grads, loss_sum, count, aux), (jnp.arange(1, n_micro), rest)
            )
        denom = jnp.maximum(count, 1).astype(jnp.float32)
        grads = jax.tree_util.tree_map(lambda g: g / denom, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss_sum / denom,
            "count": count,
            "grad_norm": optax.tree.norm(grads),
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            **{k: v / denom for k, v in aux.items()},
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


def make_multi_step(train_step):
    """K optimizer steps in one call: batches leaves are [K, A, B, ...]; metrics come back stacked [K]."""

    def multi_step(state, batches):
        return jax.lax.scan(train_step, state, batches)

    return multi_step


def make_eval_step(task: Task):
    """`eval_step(params, batch) -> (loss_sum, count)`; no dropout, no RNG."""

    def eval_step(params, batch):
        loss_sum, count, _ = task.loss_fn(params, batch, None, False)
        return loss_sum, count

    return eval_step


def make_grad_fn(task: Task):
    """`(params, batch) -> (mean loss, mean gradients)` with deterministic (eval-mode) loss: for parity tests."""

    def fn(params, batch):
        def mean_loss(p):
            loss_sum, count, _ = task.loss_fn(p, batch, None, False)
            return loss_sum / jnp.maximum(count, 1)

        return jax.value_and_grad(mean_loss)(params)

    return fn
