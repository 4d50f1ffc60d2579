"""The engine: one object that owns the mesh, the shardings, the optimizer and the compiled step functions for any
task a model family registers (`lmjax.train.task`).

    engine = Engine(cfg)                       # task of cfg.task; its data, model, optimizer, shardings
    state = engine.init_state()                # sharded TrainState, built directly on device by a jit'd init
    state, metrics = engine.train_steps(state, host_batches)   # K steps x A micro-batches per call
    engine.evaluate(state.params)              # exact means over the eval batches (sums / counts), every aux metric

`init_state` starts from `train.init_from`'s parameters when that is set (`lmjax.train.pretrained`).
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, Iterable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from lmjax.config import ConfigError, RunConfig
from lmjax.parallel import (
    batch_sharding,
    check_batch_divisible,
    host_to_global,
    make_mesh,
    param_shardings,
)
from lmjax.train.optim import freeze_labels, make_optimizer
from lmjax.train.rundir import init_run_dir, saved_tokenizer
from lmjax.train.step import TrainState, make_eval_step, make_grad_fn, make_multi_step, make_train_step
from lmjax.train.task import Data, Task, get_task

log = logging.getLogger(__name__)

# Metrics where larger is better: the best checkpoint maximises them when train.best_mode is "auto".
_HIGHER_IS_BETTER = re.compile(r"(acc|accuracy|correct|f1|bleu|precision|recall|spearman|pearson)")


def best_mode(cfg: RunConfig) -> str:
    """"min" or "max" for `train.best_metric`: `train.best_mode`, or by the metric's name when that is "auto"."""
    mode = cfg.train.best_mode
    if mode == "auto":
        return "max" if _HIGHER_IS_BETTER.search(cfg.train.best_metric or "") else "min"
    if mode not in ("min", "max"):
        raise ConfigError(f"train.best_mode={mode!r} is unknown: use min, max or auto")
    return mode


def _like_params(opt_state, params, shardings, default):
    """Shard each optimizer-state leaf like the parameter it mirrors (the longest matching path suffix of the same
    shape: Adam's mu/nu, momentum, ...); scalars such as step counts are replicated. Works through
    `optax.multi_transform`, whose masked states `optax.tree_map_params` cannot map."""
    by_path = {}
    for (path, leaf), sh in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree_util.tree_leaves(shardings)):
        by_path[tuple(map(str, path))] = (leaf.shape, sh)

    def pick(path, leaf):
        keys = tuple(map(str, path))
        for start in range(len(keys)):
            hit = by_path.get(keys[start:])
            if hit is not None and hit[0] == leaf.shape:
                return hit[1]
        return default

    return jax.tree_util.tree_map_with_path(pick, opt_state)


class Engine:
    def __init__(self, cfg: RunConfig, *, data: Data | None = None, task: Task | None = None, devices=None,
                 total_steps: int | None = None):
        self.cfg = cfg
        self.mesh = make_mesh(cfg.mesh, devices)
        self.rules = cfg.mesh.rules
        if data is None or task is None:
            spec = get_task(cfg)
            self.data = data if data is not None else spec.data(cfg, saved_tokenizer(cfg))
            self.task = task if task is not None else spec.build(cfg, self.data)
        else:
            self.data, self.task = data, task
        check_batch_divisible(cfg.data.batch_size, self.mesh, self.rules)
        self.total_steps = cfg.train.steps if total_steps is None else total_steps
        self._build()

    # ------------------------------------------------------------------------------------------------------- build
    def _build(self) -> None:
        cfg, task, mesh = self.cfg, self.task, self.mesh
        rng = jax.random.PRNGKey(cfg.train.seed)
        boxed = jax.eval_shape(task.init, rng, task.example_batch)
        abstract_vars, var_shardings = param_shardings(boxed, mesh, self.rules)
        if "params" not in abstract_vars:
            raise ValueError("the model's init must return a 'params' collection")
        self.param_shardings = var_shardings["params"]
        abstract_params = abstract_vars["params"]
        self.tx, self.schedule = make_optimizer(cfg.optim, self.total_steps, abstract_params)
        self.replicated = NamedSharding(mesh, P())
        abstract_opt = jax.eval_shape(self.tx.init, abstract_params)
        opt_shardings = _like_params(abstract_opt, abstract_params, self.param_shardings, self.replicated)
        self.batch_rows = batch_sharding(mesh, self.rules, leading=0)  # leading axis over the batch mesh axes
        carry_shardings = None
        if task.carries_state:
            abstract_carry = jax.eval_shape(lambda: task.init_carry(cfg.data.batch_size))
            carry_shardings = jax.tree_util.tree_map(lambda _: self.batch_rows, abstract_carry)
        self.state_shardings = TrainState(step=self.replicated, params=self.param_shardings,
                                          opt_state=opt_shardings, rng=self.replicated, carry=carry_shardings)
        self.batch_shardings = {k: batch_sharding(mesh, self.rules, leading=2) for k in task.example_batch}
        self.eval_batch_sharding = self.batch_rows

        def init_state(key):
            example = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.example_batch.items()}
            params = nn.meta.unbox(task.init(key, example))["params"]
            carry = task.init_carry(cfg.data.batch_size) if task.carries_state else None
            return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                              rng=jax.random.fold_in(key, 1), carry=carry)

        self._init = jax.jit(init_state, out_shardings=self.state_shardings)
        frozen = None
        if cfg.optim.freeze:
            labels = freeze_labels(abstract_params, cfg.optim.freeze)
            frozen = jax.tree_util.tree_map(lambda label: label == "frozen", labels)
        multi = make_multi_step(make_train_step(task, self.tx, self.schedule, frozen, cfg.optim.loss_norm))
        self._train = jax.jit(multi, in_shardings=(self.state_shardings, self.batch_shardings),
                              out_shardings=(self.state_shardings, self.replicated), donate_argnums=0)
        # The eval carry follows the eval batch (its size may differ from training's): its sharding is inferred.
        self._eval = jax.jit(make_eval_step(task), in_shardings=(self.param_shardings, self.eval_batch_sharding, None))
        self._grad = jax.jit(make_grad_fn(task), in_shardings=(self.param_shardings, self.eval_batch_sharding),
                             out_shardings=(self.replicated, self.param_shardings))

    # --------------------------------------------------------------------------------------------------- running
    @contextlib.contextmanager
    def activate(self):
        """The mesh and the logical-axis rules, so `nn.with_logical_constraint` inside models takes effect."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(list(self.rules)):
            yield

    def init_state(self) -> TrainState:
        """A fresh train state; with `train.init_from`, its parameters (or the `init_target` subtree of them) come
        from that run's latest checkpoint."""
        with self.activate():
            state = self._init(jax.random.PRNGKey(self.cfg.train.seed))
        source = init_run_dir(self.cfg)
        if source is None:
            return state
        from lmjax.train.pretrained import graft, load_params, subtree

        t = self.cfg.train
        step, saved = load_params(source)
        params = graft(jax.device_get(state.params), subtree(saved, t.init_source, "train.init_source"),
                       t.init_target)
        log.info("initialised %s from step %d of %s", t.init_target or "every parameter", step, source)
        self.init_message = (f"initialised {t.init_target or 'all parameters'} from {source} (step {step}"
                             f"{', subtree ' + t.init_source if t.init_source else ''})")
        return state.replace(params=jax.device_put(params, self.param_shardings))

    def abstract_state(self) -> TrainState:
        """ShapeDtypeStructs with shardings: the restore target for a checkpoint saved on any mesh."""
        shapes = jax.eval_shape(self._init, jax.random.PRNGKey(0))
        return jax.tree_util.tree_map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_shardings
        )

    def train_steps(self, state: TrainState, host_batches: dict[str, np.ndarray]) -> tuple[TrainState, dict]:
        """Run K optimizer steps; `host_batches` leaves are this process's rows, shaped [K, A, B_local, ...]."""
        unknown = set(host_batches) - set(self.batch_shardings)
        if unknown:
            raise ValueError(f"batch keys {sorted(unknown)} are not in the task's example_batch "
                             f"({sorted(self.batch_shardings)}): add them there")
        batches = {k: jax.make_array_from_process_local_data(self.batch_shardings[k], np.asarray(v))
                   for k, v in host_batches.items()}
        with self.activate():
            return self._train(state, batches)

    def eval_batches(self, split: str = "validation", max_batches: int | None = -1):
        """This process's evaluation batches of `split`; max_batches -1 = `train.eval_batches` (0 = all), None = all.
        None when the data has no such split."""
        if self.data.eval is None:
            return None
        return self.data.eval(jax.process_index(), jax.process_count(), split, max_batches)

    def evaluate(self, params, batches: Iterable[dict[str, np.ndarray]] | None = None, *, split: str = "validation",
                 max_batches: int | None = -1) -> dict[str, float]:
        """Exact means over the evaluation batches: eval_loss = sum of loss sums / sum of counts, and for every aux
        sum `k` of the task, eval_k = sum of k / sum of counts; then the task's corpus metrics. A stateful task's
        carry runs across the batches in order, from `init_carry`. {} when there is nothing to evaluate."""
        if batches is None:
            batches = self.eval_batches(split, max_batches)
            if batches is None:
                return {}
        sums: dict[str, float] = {}
        loss, count, carry = 0.0, 0.0, None
        pending = []
        with self.activate():
            for batch in batches:
                if self.task.carries_state and carry is None:
                    rows = len(next(iter(batch.values()))) * jax.process_count()
                    carry = self.task.init_carry(rows)
                (loss_sum, n, aux), carry = self._eval(params, host_to_global(batch, self.eval_batch_sharding), carry)
                pending.append((loss_sum, n, aux))
                if len(pending) >= 64:  # fetch in groups: no sync per batch, bounded device memory
                    loss, count = _add(pending, sums, loss, count)
                    pending = []
        loss, count = _add(pending, sums, loss, count)
        if count == 0:
            raise ConfigError("the evaluation split produced no tokens: check data.seq_len and data.eval_batch_size "
                              "against the split's size")
        out = {"eval_loss": loss / count, "eval_tokens": count, **{f"eval_{k}": v / count for k, v in sums.items()}}
        if self.task.corpus_metrics is not None:
            out |= {f"eval_{k}": float(v) for k, v in self.task.corpus_metrics(self, params, split).items()}
        return out

    def loss_and_grads(self, params, host_batch: dict[str, np.ndarray]) -> tuple[jax.Array, Any]:
        """Mean loss and its gradients for one global batch, in eval mode (for 1-vs-N-device parity checks)."""
        with self.activate():
            return self._grad(params, host_to_global(host_batch, self.eval_batch_sharding))

    def stack_batches(self, iterator, steps: int) -> dict[str, np.ndarray]:
        """Draw steps x grad_accum micro-batches from the iterator and stack them as [K, A, B_local, ...]."""
        accum = self.cfg.optim.grad_accum
        micro = [next(iterator) for _ in range(steps * accum)]
        return {k: np.stack([m[k] for m in micro]).reshape(steps, accum, *micro[0][k].shape) for k in micro[0]}


def _add(pending, sums: dict, loss: float, count: float) -> tuple[float, float]:
    for loss_sum, n, aux in jax.device_get(pending):
        loss += float(loss_sum)
        count += float(n)
        for k, v in aux.items():
            sums[k] = sums.get(k, 0.0) + float(v)
    return loss, count
