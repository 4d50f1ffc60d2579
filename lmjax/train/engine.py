"""The engine: one object that owns the mesh, the shardings, the optimizer and the compiled step functions for any
model family that honours the `Task` contract.

    engine = Engine(cfg)                       # mesh, data, task, optimizer, shardings
    state = engine.init_state()                # sharded TrainState, built directly on device by a jit'd init
    state, metrics = engine.train_steps(state, host_batches)   # K steps x A micro-batches per call
    engine.evaluate(state.params)              # exact mean over the eval batches (sums / counts)

The model family is the module that defines the config dataclass of `cfg.model`; it provides
`make_task(run_cfg, vocab_size) -> Task` and optionally `make_data(run_cfg) -> Data` (default: a language-model stream
from `lmjax.data.lm_corpus`).
"""

from __future__ import annotations

import contextlib
import importlib
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
from lmjax.train.step import TrainState, make_eval_step, make_grad_fn, make_multi_step, make_train_step
from lmjax.train.task import Data, Task


def family_module(cfg: RunConfig):
    return importlib.import_module(type(cfg.model).__module__)


def saved_tokenizer(cfg: RunConfig):
    """The tokenizer a run saved in its workdir when it will resume from a checkpoint there (and for `lmjax eval`),
    else None. Fitting again is not guaranteed to give the ids the checkpoint was trained on: HF's WordPiece trainer
    assigns tied pieces in varying order."""
    from lmjax.data import load_tokenizer
    from lmjax.data.tokenizers import TOKENIZER_FILE
    from lmjax.train.loop import workdir_for

    workdir = workdir_for(cfg)
    checkpoints = workdir / "checkpoints"
    if (cfg.train.resume and (workdir / "tokenizer" / TOKENIZER_FILE).is_file() and checkpoints.is_dir()
            and any(p.name.isdigit() for p in checkpoints.iterdir())):
        return load_tokenizer(workdir / "tokenizer")
    return None


def lm_data(cfg: RunConfig) -> Data:
    """Default data for language models: random windows for training, every window of the validation split for eval.
    A resumed run reuses its saved tokenizer."""
    from lmjax.data import RandomWindows, eval_windows, lm_corpus

    corpus = lm_corpus(cfg.data, saved_tokenizer(cfg))
    d = cfg.data
    held_out = corpus.valid if corpus.valid is not None else corpus.test

    def train(process_index: int, process_count: int):
        return RandomWindows(corpus.train, d.batch_size, d.seq_len, seed=d.seed,
                             process_index=process_index, process_count=process_count)

    def evaluate(process_index: int, process_count: int):
        rows = d.batch_size // process_count
        for batch in eval_windows(held_out, d.batch_size, d.seq_len, max_batches=cfg.train.eval_batches):
            yield {k: v[process_index * rows:(process_index + 1) * rows] for k, v in batch.items()}

    return Data(tokenizer=corpus.tokenizer, vocab_size=corpus.tokenizer.vocab_size, train=train,
                eval=evaluate if held_out is not None else None)


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
        family = family_module(cfg)
        self.data = data if data is not None else getattr(family, "make_data", lm_data)(cfg)
        self.task = task if task is not None else family.make_task(cfg, self.data.vocab_size)
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
        self.state_shardings = TrainState(step=self.replicated, params=self.param_shardings,
                                          opt_state=opt_shardings, rng=self.replicated)
        self.batch_shardings = {k: batch_sharding(mesh, self.rules, leading=2) for k in task.example_batch}
        self.eval_batch_sharding = batch_sharding(mesh, self.rules, leading=0)

        def init_state(key):
            example = {k: jnp.zeros(v.shape, v.dtype) for k, v in task.example_batch.items()}
            params = nn.meta.unbox(task.init(key, example))["params"]
            return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                              rng=jax.random.fold_in(key, 1))

        self._init = jax.jit(init_state, out_shardings=self.state_shardings)
        frozen = None
        if cfg.optim.freeze:
            labels = freeze_labels(abstract_params, cfg.optim.freeze)
            frozen = jax.tree_util.tree_map(lambda label: label == "frozen", labels)
        multi = make_multi_step(make_train_step(task, self.tx, self.schedule, frozen))
        self._train = jax.jit(multi, in_shardings=(self.state_shardings, self.batch_shardings),
                              out_shardings=(self.state_shardings, self.replicated), donate_argnums=0)
        self._eval = jax.jit(make_eval_step(task), in_shardings=(self.param_shardings, self.eval_batch_sharding),
                             out_shardings=self.replicated)
        self._grad = jax.jit(make_grad_fn(task), in_shardings=(self.param_shardings, self.eval_batch_sharding),
                             out_shardings=(self.replicated, self.param_shardings))

    # --------------------------------------------------------------------------------------------------- running
    @contextlib.contextmanager
    def activate(self):
        """The mesh and the logical-axis rules, so `nn.with_logical_constraint` inside models takes effect."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(list(self.rules)):
            yield

    def init_state(self) -> TrainState:
        with self.activate():
            return self._init(jax.random.PRNGKey(self.cfg.train.seed))

    def abstract_state(self) -> TrainState:
        """ShapeDtypeStructs with shardings: the restore target for a checkpoint saved on any mesh."""
        shapes = jax.eval_shape(self._init, jax.random.PRNGKey(0))
        return jax.tree_util.tree_map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, self.state_shardings
        )

    def train_steps(self, state: TrainState, host_batches: dict[str, np.ndarray]) -> tuple[TrainState, dict]:
        """Run K optimizer steps; `host_batches` leaves are this process's rows, shaped [K, A, B_local, ...]."""
        batches = {k: jax.make_array_from_process_local_data(self.batch_shardings[k], np.asarray(v))
                   for k, v in host_batches.items()}
        with self.activate():
            return self._train(state, batches)

    def evaluate(self, params, batches: Iterable[dict[str, np.ndarray]] | None = None) -> dict[str, float]:
        """Exact mean loss over the eval batches: sum of loss sums / sum of counts."""
        if batches is None:
            if self.data.eval is None:
                return {}
            batches = self.data.eval(jax.process_index(), jax.process_count())
        total, count = 0.0, 0.0
        with self.activate():
            for batch in batches:
                loss_sum, n = self._eval(params, host_to_global(batch, self.eval_batch_sharding))
                total += float(loss_sum)
                count += float(n)
        if count == 0:
            raise ConfigError("the evaluation split produced no tokens: check data.seq_len against the split's size")
        return {"eval_loss": total / count, "eval_tokens": count}

    def loss_and_grads(self, params, host_batch: dict[str, np.ndarray]) -> tuple[jax.Array, Any]:
        """Mean loss and its gradients for one global batch, in eval mode (for 1-vs-N-device parity checks)."""
        with self.activate():
            return self._grad(params, host_to_global(host_batch, self.eval_batch_sharding))

    def stack_batches(self, iterator, steps: int) -> dict[str, np.ndarray]:
        """Draw steps x grad_accum micro-batches from the iterator and stack them as [K, A, B_local, ...]."""
        accum = self.cfg.optim.grad_accum
        micro = [next(iterator) for _ in range(steps * accum)]
        return {k: np.stack([m[k] for m in micro]).reshape(steps, accum, *micro[0][k].shape) for k in micro[0]}
