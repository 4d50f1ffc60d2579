"""Bengio et al. (2003)'s neural probabilistic language model: a feed-forward n-gram model over learned word vectors.

    x = [C(w_t-n+1); ...; C(w_t-1)]                      the n-1 context words' rows of the shared table C [V, m]
    h = tanh(x H + d)                                     one hidden layer of `hidden` units
    logits = h U + b  (+ x W with direct connections)     softmax over the vocabulary: p(w_t | w_t-n+1 .. w_t-1)
    logits = (h P) C^T + b                                with `tied`: the output reuses C (Press & Wolf 2017)

Unlike a count model, similar words get similar rows of C, so probability mass generalises to contexts never seen:
the cosine similarity of two learned vectors is informative, where that of two distinct one-hot vectors is always 0.

Data: every position t of a split's word stream (PTB convention: `<eos>` at each line end, contexts run across
sentences; the stream starts after n-1 `<eos>`) is one example {"inputs": the n-1 previous ids, "targets": w_t}.
Training draws positions at random (batch k from `np.random.default_rng([seed, k])`, so the data state is k);
evaluation visits every position once, in order, with a mask on the last batch's padding rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, check_ranges, register_preset
from lmjax.ops.losses import token_cross_entropy
from lmjax.train.task import Data, Task, register_task


@dataclass(frozen=True)
class NNLMConfig:
    family: ClassVar[str] = "nnlm"
    vocab_size: int = 0  # 0 = take it from the tokenizer
    context: int = 4  # n - 1 previous words
    embed_dim: int = 128  # m, the word vectors' size
    hidden: int = 256
    direct: bool = False  # Bengio's optional direct input-to-output connections W
    dropout: float = 0.0  # on the concatenated word vectors and on the hidden layer
    word_dropout: float = 0.0  # drops whole context words (their vector zeroed): the network learns to back off
    tied: bool = False  # output layer = a projection P [hidden, m] followed by C^T, instead of U [hidden, V]

    def validate(self) -> None:
        """Ranges a run config is checked against when it is built."""
        check_ranges("model", self, (
            ("vocab_size", self.vocab_size >= 0, ">= 0 (0 = the tokenizer's size)"),
            ("context", self.context >= 1, ">= 1"),
            ("embed_dim", self.embed_dim >= 1, ">= 1"),
            ("hidden", self.hidden >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("word_dropout", 0 <= self.word_dropout < 1, "in [0, 1)"),
        ))


class NNLM(nn.Module):
    config: NNLMConfig

    @nn.compact
    def __call__(self, context: jax.Array, train: bool = False) -> jax.Array:
        """context [B, n-1] ids -> logits [B, V]."""
        cfg = self.config
        embed = nn.Embed(cfg.vocab_size, cfg.embed_dim, name="C", embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(0.1), ("vocab", "embed")))
        x = embed(context)  # [B, n-1, m]
        x = nn.Dropout(cfg.word_dropout, broadcast_dims=(2,), deterministic=not train)(x)
        x = x.reshape(context.shape[0], -1)  # [B, (n-1) m]
        x = nn.Dropout(cfg.dropout, deterministic=not train)(x)
        h = jnp.tanh(nn.Dense(cfg.hidden, name="H", kernel_init=_kernel_init(("embed", "mlp")))(x))
        h = nn.Dropout(cfg.dropout, deterministic=not train)(h)
        if cfg.tied:
            out = nn.Dense(cfg.embed_dim, use_bias=False, name="P", kernel_init=_kernel_init(("mlp", "embed")))(h)
            bias = self.param("b", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("vocab",)),
                              (cfg.vocab_size,))
            logits = embed.attend(out) + bias
        else:
            logits = nn.Dense(cfg.vocab_size, name="U", kernel_init=_kernel_init(("embed", "vocab")))(h)
        if cfg.direct:
            logits = logits + nn.Dense(cfg.vocab_size, use_bias=False, name="W",
                                       kernel_init=_kernel_init(("embed", "vocab")))(x)
        return logits


def _kernel_init(axes: tuple[str, str]):
    return nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes)


def embeddings(params) -> np.ndarray:
    """The learned word vectors C [V, m]."""
    return np.asarray(nn.meta.unbox(params)["C"]["embedding"])


def nearest_neighbours(params, tokenizer, words: list[str], k: int = 5) -> dict[str, list[tuple[str, float]]]:
    """Each word's k most cosine-similar other words under C (one-hot vectors would give 0 for every pair)."""
    table = embeddings(params)
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    out = {}
    for w in words:
        i = tokenizer.token_to_id(w)
        if i is None:
            continue
        sims = unit @ unit[i]
        sims[i] = -np.inf
        top = np.argsort(-sims)[:k]
        out[w] = [(tokenizer.id_to_token(int(j)), float(sims[j])) for j in top]
    return out


# ------------------------------------------------------------------------------------------------- engine contract

def contexts(stream: np.ndarray, context: int, positions: np.ndarray, pad_id: int) -> dict[str, np.ndarray]:
    """(n-1 previous ids, id) pairs at `positions` of a token stream; before its start the context is `pad_id`."""
    padded = np.concatenate([np.full(context, pad_id, stream.dtype), stream])
    window = padded[positions[:, None] + np.arange(context + 1)]
    return {"inputs": window[:, :-1], "targets": window[:, -1]}


class RandomContexts:
    """Resumable training batches of random positions; batch k depends only on (seed, k)."""

    def __init__(self, stream: np.ndarray, context: int, batch_size: int, pad_id: int, *, seed: int,
                 rows: slice = slice(None)):
        self.stream, self.context, self.batch_size, self.pad_id = stream, context, batch_size, pad_id
        self.seed, self.rows, self.step = seed, rows, 0

    def __iter__(self) -> RandomContexts:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        positions = np.random.default_rng([self.seed, self.step]).integers(0, len(self.stream), self.batch_size)
        self.step += 1
        return contexts(self.stream, self.context, positions[self.rows], self.pad_id)

    def state(self) -> dict:
        return {"step": self.step}

    def restore(self, state: dict) -> None:
        self.step = int(state["step"])


def eval_contexts(stream: np.ndarray, context: int, batch_size: int, pad_id: int, rows: slice = slice(None),
                  max_batches: int = 0):
    """Every position of the stream once, in order (the first `max_batches` batches if > 0); the last batch is
    padded and masked."""
    stop = len(stream) if max_batches <= 0 else min(len(stream), max_batches * batch_size)
    for start in range(0, stop, batch_size):
        positions = np.arange(start, start + batch_size)
        mask = positions < len(stream)
        batch = contexts(stream, context, np.minimum(positions, len(stream) - 1), pad_id)
        yield {k: v[rows] for k, v in {**batch, "mask": mask.astype(np.float32)}.items()}


def make_data(run_cfg: RunConfig, tokenizer=None) -> Data:
    """PTB-style word streams as (context, target) batches; eval covers the whole split (or the first
    `train.eval_batches` batches when that is > 0)."""
    from lmjax.data import lm_corpus

    corpus = lm_corpus(run_cfg.data, tokenizer)
    cfg, d = run_cfg.model, run_cfg.data
    pad_id = corpus.tokenizer.eos_id if corpus.tokenizer.eos_id is not None else 0
    held_out = corpus.valid if corpus.valid is not None else corpus.test

    def rows(process_index: int, process_count: int) -> slice:
        per = d.batch_size // process_count
        return slice(process_index * per, (process_index + 1) * per)

    def train(process_index: int, process_count: int):
        return RandomContexts(corpus.train, cfg.context, d.batch_size, pad_id, seed=d.seed,
                              rows=rows(process_index, process_count))

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        stream = corpus.test if split == "test" else held_out
        if stream is None:
            return None
        limit = run_cfg.train.eval_batches if max_batches == -1 else (max_batches or 0)
        batch = d.eval_batch_size or d.batch_size
        per = batch // process_count
        return eval_contexts(stream, cfg.context, batch, pad_id, slice(process_index * per, (process_index + 1) * per),
                             limit)

    return Data(tokenizer=corpus.tokenizer, vocab_size=corpus.tokenizer.vocab_size, train=train,
                eval=evaluate if held_out is not None else None)


@register_task("nnlm", "lm", data=make_data, description="next word from the previous `context` words")
def make_task(run_cfg: RunConfig, data: Data) -> Task:
    """Next-word cross entropy (sum, count) of the NNLM; FLOPs are 6 per weight per example (lookups excluded)."""
    vocab_size = data.vocab_size
    cfg: NNLMConfig = run_cfg.model
    if cfg.vocab_size == 0:
        cfg = dataclasses.replace(cfg, vocab_size=vocab_size)
    if cfg.vocab_size < vocab_size or cfg.context < 1:
        raise ConfigError(f"model.vocab_size={cfg.vocab_size} / model.context={cfg.context}: set vocab_size=0 "
                          f"(the tokenizer's {vocab_size}) and context >= 1")
    model = NNLM(cfg)
    batch = run_cfg.data.batch_size
    example = {"inputs": jax.ShapeDtypeStruct((batch, cfg.context), jnp.int32),
               "targets": jax.ShapeDtypeStruct((batch,), jnp.int32)}

    def loss_fn(params, batch, rng, train):
        rngs = {"dropout": rng} if rng is not None else {}
        logits = model.apply({"params": params}, batch["inputs"], train=train, rngs=rngs)
        loss_sum, count = token_cross_entropy(logits, batch["targets"], batch.get("mask"))
        return loss_sum, count, {}

    x_dim = cfg.context * cfg.embed_dim
    out_weights = (cfg.hidden + cfg.vocab_size) * cfg.embed_dim if cfg.tied else cfg.hidden * cfg.vocab_size
    weights = x_dim * cfg.hidden + out_weights + (x_dim * cfg.vocab_size if cfg.direct else 0)
    return Task(model=model, loss_fn=loss_fn, example_batch=example, flops_per_token=6.0 * weights,
                tokens_per_example=1,
                init_fn=lambda rng, b: model.init(rng, b["inputs"]))


# --------------------------------------------------------------------------------------------------------- presets

@register_preset("nnlm_ptb", "Bengio's NNLM (7-gram context, 256-d vectors, 1024 tanh units, tied output) on PTB")
def nnlm_ptb() -> RunConfig:
    """About 22 epochs: 35 s on an H100, 39 minutes on a 2-core CPU; the best of the 4,000-step
    checkpoints on valid is kept. Chosen on valid perplexity among 30 runs (context, width, dropout, learning
    rate, steps, weight decay: experiments/RESULTS.md). Mikolov et al. (2011) report 140.2 test ppl."""
    return RunConfig(
        name="nnlm_ptb",
        model=NNLMConfig(context=6, embed_dim=256, hidden=1024, dropout=0.5, word_dropout=0.1, tied=True),
        data=DataConfig(dataset="ptb", tokenizer="word", batch_size=512),
        optim=OptimConfig(lr=2e-3, end_lr=1e-4, warmup_steps=200, weight_decay=0.1, clip_norm=1.0),
        train=TrainConfig(steps=40000, eval_every=4000, eval_batches=0, checkpoint_every=4000, log_every=200,
                          steps_per_call=10, sample_tokens=0),
    )


@register_preset("nnlm_smoke", "tiny NNLM (context 2, 16-d) on tiny_shakespeare words for 30 steps")
def nnlm_smoke() -> RunConfig:
    return RunConfig(
        name="nnlm_smoke",
        model=NNLMConfig(context=2, embed_dim=16, hidden=32),
        data=DataConfig(dataset="tiny_shakespeare", tokenizer="word", min_freq=5, batch_size=32),
        optim=OptimConfig(lr=3e-3),
        train=TrainConfig(steps=30, eval_every=30, eval_batches=4, checkpoint_every=30, log_every=10,
                          sample_tokens=0),
    )
