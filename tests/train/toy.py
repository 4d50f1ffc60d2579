"""A toy model family for engine tests: a bigram-plus-MLP language model with logical axis names, on synthetic data.

Small enough to compile in a second; big enough to have every sharded axis (embed, mlp, vocab).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import DataConfig, OptimConfig, RunConfig, TrainConfig
from lmjax.ops.losses import token_cross_entropy
from lmjax.train.task import Data, Task, register_task


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    family: ClassVar[str] = "toy"
    vocab_size: int = 32
    d_model: int = 16
    d_mlp: int = 32
    dropout: float = 0.1


class ToyLM(nn.Module):
    cfg: ToyConfig

    @nn.compact
    def __call__(self, tokens, *, train: bool = False):
        c = self.cfg
        init = nn.initializers.normal(0.02)
        emb = self.param("embed", nn.with_logical_partitioning(init, ("vocab", "embed")), (c.vocab_size, c.d_model))
        x = emb[tokens]
        h = nn.Dense(c.d_mlp, kernel_init=nn.with_logical_partitioning(init, ("embed", "mlp")), name="up")(x)
        h = nn.Dropout(c.dropout, deterministic=not train)(nn.gelu(h))
        x = x + nn.Dense(c.d_model, kernel_init=nn.with_logical_partitioning(init, ("mlp", "embed")), name="down")(h)
        return nn.Dense(c.vocab_size, kernel_init=nn.with_logical_partitioning(init, ("embed", "vocab")),
                        name="head")(x)


def make_task(cfg: RunConfig, data: Data) -> Task:
    model = ToyLM(cfg.model)

    def loss_fn(params, batch, rng, train):
        rngs = {"dropout": rng} if train else {}
        logits = model.apply({"params": params}, batch["inputs"], train=train, rngs=rngs)
        loss_sum, count = token_cross_entropy(logits, batch["targets"], batch.get("mask"))
        return loss_sum, count, {}

    shape = (cfg.data.batch_size, cfg.data.seq_len)
    example = {k: jax.ShapeDtypeStruct(shape, jnp.int32) for k in ("inputs", "targets")}
    return Task(model=model, loss_fn=loss_fn, example_batch=example, tokens_per_example=cfg.data.seq_len,
                flops_per_token=6 * 2 * cfg.model.d_model * cfg.model.d_mlp)


def synthetic_tokens(n: int = 20_000, vocab: int = 32, seed: int = 0) -> np.ndarray:
    """A noisy deterministic sequence (next token mostly = 3 * token + 1 mod V), so the loss can fall."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, np.int32)
    out[0] = 0
    noise = rng.random(n) < 0.2
    rand = rng.integers(0, vocab, n)
    for i in range(1, n):
        out[i] = rand[i] if noise[i] else (3 * out[i - 1] + 1) % vocab
    return out


class _Windows:
    """Step-indexed random windows (resumable by step), split by process."""

    def __init__(self, tokens, batch, seq, seed, pi, pc):
        self.tokens, self.batch, self.seq, self.seed, self.pi, self.pc, self.step = tokens, batch, seq, seed, pi, pc, 0

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.step])
        self.step += 1
        starts = rng.integers(0, len(self.tokens) - self.seq - 1, self.batch)
        rows = self.batch // self.pc
        starts = starts[self.pi * rows:(self.pi + 1) * rows]
        x = np.stack([self.tokens[s:s + self.seq + 1] for s in starts])
        return {"inputs": x[:, :-1], "targets": x[:, 1:]}

    def state(self):
        return {"step": self.step}

    def restore(self, state):
        self.step = state["step"]


def make_data(cfg: RunConfig, tokenizer=None) -> Data:
    tokens = synthetic_tokens(vocab=cfg.model.vocab_size)
    d = cfg.data

    def evaluate(pi, pc, split="validation", max_batches=-1):
        it = _Windows(tokens[-4000:], d.batch_size, d.seq_len, 1234, pi, pc)
        return [next(it) for _ in range(2)]

    return Data(tokenizer=None, vocab_size=cfg.model.vocab_size,
                train=lambda pi, pc: _Windows(tokens[:-4000], d.batch_size, d.seq_len, d.seed, pi, pc), eval=evaluate)


def toy_config(**train_kw) -> RunConfig:
    return RunConfig(
        name="toy", model=ToyConfig(),
        data=DataConfig(dataset="synthetic", seq_len=8, batch_size=16),
        optim=OptimConfig(lr=1e-2, warmup_steps=5, weight_decay=0.01),
        train=TrainConfig(**{"steps": 50, "eval_every": 25, "log_every": 5, "checkpoint_every": 25,
                             "sample_tokens": 0, "progress": False, "tensorboard": False, "plot": False, **train_kw}),
    )


# The engine finds tasks through the registry; the data builder is looked up at call time so tests may replace it.
register_task("toy", "lm", data=lambda cfg, tokenizer=None: make_data(cfg, tokenizer))(
    lambda cfg, data: make_task(cfg, data))
