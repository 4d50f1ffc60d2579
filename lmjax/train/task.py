"""The engine's contract with a model family.

The training loop never learns what a GPT or an LSTM is. A model family hands it a `Task`:

- `model`: a Flax Linen module whose `init`/`apply` are pure; parameters carry logical axis names
  (`nn.with_logical_partitioning`), which the engine maps to mesh axes with the config's rules table.
- `loss_fn(params, batch, rng, train) -> (loss_sum, count, aux)`: *sums*, not means, so gradient accumulation and
  sharding stay exact (the engine divides once, by the global count). `aux` is a dict of scalar sums to log.
  `rng` is None when `train` is False. `params` is the `params` collection (a dict); the function calls
  `model.apply({"params": params}, ...)` itself, so a family can add heads, auxiliary losses or extra inputs.
- `example_batch`: a dict of `jax.ShapeDtypeStruct` for ONE global micro-batch (leading dim = global batch); used for
  `init` and for ahead-of-time compilation.
- `init_fn(rng, example_batch) -> variables` (default: `model.init(rng, example_batch["inputs"])`).
- `flops_per_token`: training FLOPs (forward + backward) per token, for MFU. 0 if unknown.
- `tokens_per_example`: tokens a batch row contributes to tokens/s (e.g. the sequence length).
- `sample_fn(params, tokenizer, prompt, max_new_tokens, rng) -> str` (optional): what the run prints at the end.

A family also hands the engine its `Data`: a tokenizer and two iterator factories. `train(process_index,
process_count)` returns a resumable iterator of host-local NumPy batches (`state()` / `restore(state)`), `eval(...)`
returns a fresh, deterministic iterable of eval batches (with a "mask" where rows are padding).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

Batch = dict[str, Any]
LossFn = Callable[[Any, Batch, Any, bool], tuple[jax.Array, jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass
class Task:
    model: Any
    loss_fn: LossFn
    example_batch: dict[str, jax.ShapeDtypeStruct]
    init_fn: Callable[[jax.Array, Batch], Any] | None = None
    flops_per_token: float = 0.0
    tokens_per_example: int = 1
    sample_fn: Callable[..., str] | None = None

    def init(self, rng: jax.Array, batch: Batch) -> Any:
        if self.init_fn is not None:
            return self.init_fn(rng, batch)
        return self.model.init(rng, batch["inputs"])


@dataclasses.dataclass
class Data:
    tokenizer: Any
    vocab_size: int
    train: Callable[[int, int], Any]
    eval: Callable[[int, int], Any] | None = None
