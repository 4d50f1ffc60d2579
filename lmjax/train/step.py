"""Train state and the pure step functions the engine jit-compiles.

One optimizer step over A micro-batches (gradient accumulation) computes

    g = (sum_a grad loss_sum_a) / (sum_a count_a)

so the mean is exact whatever the split into micro-batches and devices (`optim.loss_norm=sequence` divides by the
number of sequences instead: Zaremba et al.'s loss, summed over time and averaged over the batch). `multi_step` scans
K such steps inside one compiled call, with the K x A micro-batches already on device, which removes per-step
dispatch overhead.

A task that carries state (`Task.init_carry`) threads it through the micro-batches in order, the carry entering
each as a constant (truncated backpropagation through time), and keeps it in `TrainState.carry`.
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
    carry: Any = None  # a stateful task's carry (leading axis = global batch); None for stateless tasks


def step_key(state: TrainState) -> jax.Array:
    return jax.random.fold_in(state.rng, state.step)


def reset_rows(carry, reset, fresh):
    """Rows b with reset[b] set take `fresh`'s row; the others keep theirs (every carry leaf is [B, ...])."""
    def pick(c, f):
        return jnp.where(reset.reshape(reset.shape + (1,) * (c.ndim - 1)), f, c)

    return jax.tree_util.tree_map(pick, carry, fresh)


def task_loss(task: Task, params, batch, rng, train: bool, carry=None):
    """(loss_sum, count, aux, new_carry) for any task: stateless tasks pass the carry (None) through; for stateful
    ones rows marked `reset` restart from `init_carry` and the incoming carry is a constant (no gradient)."""
    if not task.carries_state:
        loss_sum, count, aux = task.loss_fn(params, batch, rng, train)
        return loss_sum, count, aux, carry
    carry = jax.lax.stop_gradient(carry)
    if "reset" in batch:
        carry = reset_rows(carry, batch["reset"], task.init_carry(batch["reset"].shape[0]))
    return task.loss_fn(params, batch, rng, train, carry)


def make_train_step(task: Task, tx: optax.GradientTransformation, schedule: optax.Schedule, frozen=None,
                    loss_norm: str = "token"):
    """`train_step(state, batches) -> (state, metrics)` for batches whose leaves are [A, B, ...] (A micro-batches).

    `frozen`: a pytree of bools like params (or None); frozen leaves enter the loss through `stop_gradient`, so
    their gradients are zeros XLA never computes (a frozen trunk under a trained head costs no backward pass), and
    the logged grad_norm covers the trained parameters only. The optimizer must also leave them alone.
    `loss_norm`: "token" divides the summed gradient by the token count, "sequence" by the number of rows."""

    def micro(params, batch, rng, carry):
        if frozen is not None:
            params = jax.tree_util.tree_map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, frozen)
        loss_sum, count, aux, carry = task_loss(task, params, batch, rng, True, carry)
        return loss_sum, (count, aux, carry)

    grad_fn = jax.value_and_grad(micro, has_aux=True)

    def train_step(state: TrainState, batches):
        key = step_key(state)
        n_micro, rows = jax.tree_util.tree_leaves(batches)[0].shape[:2]

        def accumulate(acc, xs):
            i, batch = xs
            sums, carry = acc
            (loss_sum, (count, aux, carry)), grads = grad_fn(state.params, batch, jax.random.fold_in(key, i), carry)
            return (jax.tree_util.tree_map(jnp.add, sums, (grads, loss_sum, count, aux)), carry), None

        first = jax.tree_util.tree_map(lambda x: x[0], batches)
        (loss_sum, (count, aux, carry)), grads = grad_fn(state.params, first, jax.random.fold_in(key, 0), state.carry)
        if n_micro > 1:  # static: accumulation is a scan over the remaining micro-batches
            rest = jax.tree_util.tree_map(lambda x: x[1:], batches)
            ((grads, loss_sum, count, aux), carry), _ = jax.lax.scan(
                accumulate, ((grads, loss_sum, count, aux), carry), (jnp.arange(1, n_micro), rest)
            )
        denom = jnp.maximum(count, 1).astype(jnp.float32)
        grad_denom = denom if loss_norm == "token" else jnp.float32(n_micro * rows)
        grads = jax.tree_util.tree_map(lambda g: g / grad_denom, grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss_sum / denom,
            "count": count,
            "grad_norm": optax.tree.norm(grads),
            "lr": jnp.asarray(schedule(state.step), jnp.float32),
            **{k: v / denom for k, v in aux.items()},
        }
        new = state.replace(step=state.step + 1, params=params, opt_state=opt_state, carry=carry)
        return new, metrics

    return train_step


def make_multi_step(train_step):
    """K optimizer steps in one call: batches leaves are [K, A, B, ...]; metrics come back stacked [K]."""

    def multi_step(state, batches):
        return jax.lax.scan(train_step, state, batches)

    return multi_step


def make_eval_step(task: Task):
    """`eval_step(params, batch, carry) -> ((loss_sum, count, aux), carry)`; no dropout, no RNG. Stateless tasks
    pass carry=None through."""

    def eval_step(params, batch, carry):
        loss_sum, count, aux, carry = task_loss(task, params, batch, None, False, carry)
        return (loss_sum, count, aux), carry

    return eval_step


def make_grad_fn(task: Task):
    """`(params, batch) -> (mean loss, mean gradients)` with deterministic (eval-mode) loss: for parity tests."""

    def fn(params, batch):
        def mean_loss(p):
            carry = task.init_carry(batch["inputs"].shape[0]) if task.carries_state else None
            loss_sum, count, _, _ = task_loss(task, p, batch, None, False, carry)
            return loss_sum / jnp.maximum(count, 1)

        return jax.value_and_grad(mean_loss)(params)

    return fn
