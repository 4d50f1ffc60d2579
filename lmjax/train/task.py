"""The engine's contract with a model family, and the registry of tasks the families offer.

The training loop never learns what a GPT or an LSTM is. A model family registers named tasks:

    @register_task("gpt", "classify", data=sentence_data, description="...")
    def classify_task(run_cfg: RunConfig, data: Data) -> Task: ...

and a run names one in its config (`RunConfig.task`, e.g. `--set task=classify`). The engine builds the data first
(`data(run_cfg, tokenizer)`, where `tokenizer` is the one saved by the run being resumed or initialised from, else
None) and hands the prepared `Data` (tokenizer, special ids, sizes in `Data.info`) to the task builder.

A `Task` holds:

- `model`: a Flax Linen module whose `init`/`apply` are pure; parameters carry logical axis names
  (`nn.with_logical_partitioning`), which the engine maps to mesh axes with the config's rules table.
- `loss_fn(params, batch, rng, train) -> (loss_sum, count, aux)`: *sums*, not means, so gradient accumulation and
  sharding stay exact (the engine divides once, by the global count). `aux` is a dict of scalar sums; the engine
  reports each as a mean over `count` in training and in evaluation (`correct` becomes `eval_correct`, an accuracy
  when count is rows). `rng` is None when `train` is False. `params` is the `params` collection (a dict); the
  function calls `model.apply({"params": params}, ...)` itself, so a family can add heads, auxiliary losses or extra
  inputs.
- `example_batch`: a dict of `jax.ShapeDtypeStruct` for ONE global micro-batch (leading dim = global batch); used for
  `init` and for ahead-of-time compilation.
- `init_fn(rng, example_batch) -> variables` (default: `model.init(rng, example_batch["inputs"])`).
- `init_carry(batch_size) -> carry` (optional): the task carries state from one batch to the next (a recurrent
  model under truncated backpropagation through time). Then `loss_fn(params, batch, rng, train, carry) ->
  (loss_sum, count, aux, new_carry)`; the engine keeps the carry in the train state (sharded by batch, checkpointed,
  so a resumed run continues bit-exactly), stops gradients at batch boundaries, and resets rows to `init_carry` where
  the batch has `reset` set. Evaluation carries it across the evaluation batches, in order.
- `corpus_metrics(engine, params, split) -> dict[str, float]` (optional): host-side metrics of the evaluated split
  that are not sums of per-batch values (BLEU, chunk F1), merged into what evaluation reports.
- `flops_per_token`: training FLOPs (forward + backward) per token, for MFU. 0 if unknown.
- `tokens_per_example`: tokens a batch row contributes to tokens/s (e.g. the sequence length).
- `count_tokens`: tokens/s counts the loss's `count` of each batch instead (batches whose rows vary, e.g. under a
  token budget).
- `sample_fn(params, tokenizer, prompt, max_new_tokens, rng, **sampling) -> str` (optional): text generation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from lmjax.config import ConfigError, RunConfig
from lmjax.data.pipeline import Data

__all__ = ["Batch", "Data", "Task", "TaskSpec", "get_task", "list_tasks", "register_task"]

Batch = dict[str, Any]
LossFn = Callable[..., tuple]


@dataclasses.dataclass
class Task:
    model: Any
    loss_fn: LossFn
    example_batch: dict[str, jax.ShapeDtypeStruct]
    init_fn: Callable[[jax.Array, Batch], Any] | None = None
    flops_per_token: float = 0.0
    tokens_per_example: float = 1
    sample_fn: Callable[..., str] | None = None
    init_carry: Callable[[int], Any] | None = None
    corpus_metrics: Callable[[Any, Any, str], dict[str, float]] | None = None
    count_tokens: bool = False

    def init(self, rng: jax.Array, batch: Batch) -> Any:
        if self.init_fn is not None:
            return self.init_fn(rng, batch)
        return self.model.init(rng, batch["inputs"])

    @property
    def carries_state(self) -> bool:
        return self.init_carry is not None


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A registered task: how to build its data and its `Task` from a run config."""

    family: str
    name: str
    build: Callable[[RunConfig, Data], Task]
    data: Callable[[RunConfig, Any], Data]
    description: str = ""


_TASKS: dict[tuple[str, str], TaskSpec] = {}


def register_task(family: str, name: str, *, data: Callable[[RunConfig, Any], Data], description: str = ""):
    """Decorator: register `build(run_cfg, data) -> Task` as task `name` of `family`, with its data builder
    `data(run_cfg, tokenizer) -> Data`."""

    def wrap(build: Callable[[RunConfig, Data], Task]):
        key = (family, name)
        if key in _TASKS and _TASKS[key].build is not build:
            raise ValueError(f"task {name!r} of family {family!r} registered twice")
        _TASKS[key] = TaskSpec(family, name, build, data, description or (build.__doc__ or "").split("\n")[0])
        return build

    return wrap


def list_tasks() -> dict[tuple[str, str], TaskSpec]:
    """Every registered task by (family, name), after importing the families that register presets."""
    from lmjax.config import list_presets

    list_presets()  # imports the model modules, which register their tasks
    return dict(sorted(_TASKS.items()))


def get_task(cfg: RunConfig) -> TaskSpec:
    """The task `cfg.task` of `cfg`'s model family; a one-line ConfigError naming the family's tasks otherwise."""
    key = (cfg.family, cfg.task)
    if key not in _TASKS:
        list_tasks()
    if key not in _TASKS:
        offered = sorted(name for family, name in _TASKS if family == cfg.family)
        hint = f"choose one of {', '.join(offered)}" if offered else "this family registers no tasks"
        raise ConfigError(f"task={cfg.task!r} is not a task of the {cfg.family!r} family: {hint} (--set task=NAME)")
    return _TASKS[key]


def tagging_corpus_metrics(data: Data, predict: Callable, *, accuracy: bool = True) -> Callable:
    """A Task.corpus_metrics for tagging: the tags `predict(params, batch)` gives every word of a split
    (`data.info["ordered"](split)` yields (example indices, batch); `data.info["gold"][split]` holds the gold tag ids;
    `batch["labels"] >= 0` marks the words a row predicts), scored over the whole split: token accuracy (when
    `accuracy`) and, for IOB tags (`data.info["scheme"] == "iob"`), conlleval's phrase precision, recall and F1. A word
    that got no prediction (past a model's position table) counts as wrong for the accuracy and as "O" for phrases."""
    import numpy as np

    from lmjax.scoring import chunk_f1

    def corpus_metrics(engine, params, split="validation"):
        iob = data.info["scheme"] == "iob"
        if split not in data.info.get("gold", {}) or not (accuracy or iob):
            return {}
        names, gold = data.info["labels"], data.info["gold"][split]
        predicted: list[list[str]] = [[] for _ in gold]
        with engine.activate():
            for indices, batch in data.info["ordered"](split):
                tags = np.asarray(predict(params, batch))
                for row, i in enumerate(indices):
                    predicted[i] = [names[t] for t in tags[row][np.asarray(batch["labels"][row]) >= 0]]
        out = {}
        if accuracy:
            right = sum(names[t] == q for g, p in zip(gold, predicted) for t, q in zip(g, p))
            out["accuracy"] = right / max(1, sum(map(len, gold)))
        if iob:
            predicted = [p + ["O"] * (len(g) - len(p)) for p, g in zip(predicted, gold)]
            scores = chunk_f1([[names[t] for t in g] for g in gold], predicted)
            out |= {"precision": scores["precision"], "recall": scores["recall"], "f1": scores["f1"]}
        return out

    return corpus_metrics
