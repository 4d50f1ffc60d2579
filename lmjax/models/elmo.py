"""ELMo: a two-layer bidirectional LSTM language model whose layers are a word's contextual features (Peters et al.,
2018; bilm-tf's design, scaled down).

    x_t = CharCNN(chars(w_t))  or  E[w_t]                         the token layer (context-free), width P
    forward:   h^1_t, h^2_t = LSTMP_1, LSTMP_2 over x_1..x_t      h^2 = LSTMP_2(h^1) + h^1 (residual)
    backward:  the same, its own weights, over x_n..x_t
    p(w_{t+1} | w_<=t) = softmax(W h^2_fwd,t + b),   p(w_{t-1} | w_>=t) = softmax(W h^2_bwd,t + b)    one shared softmax

LSTMP is an LSTM with a projection (hidden H, output and recurrent state P, `lmjax.layers.RecurrentLayer` with
`proj`), the cell clipped to ±cell_clip and the projection to ±proj_clip. Dropout acts on the token layer, between
the LSTM layers and on the top layer. The loss is the mean of the two directions' per-word cross entropies; with
`sampled` > 0, training's softmax runs over the target and `sampled` log-uniform candidates (`lmjax.ops.losses.
sampled_softmax_cross_entropy`), evaluation's over the whole vocabulary (exact perplexities).

Training (task `pretrain`, `lmjax.data.elmo_data`): the forward LM reads the corpus stream, the backward LM the
reversed stream, both carried from batch to batch by the engine (`Task.init_carry`: checkpointed, resumed exactly).

Features: `layers(params, inputs, lengths)` gives each word three vectors of width 2P: [x; x], [h^1_fwd; h^1_bwd],
[h^2_fwd; h^2_bwd]; `embed(...)` does it for raw sentences, each wrapped in the boundary word `</s>` as in training;
a downstream task mixes them with `lmjax.layers.ScalarMix`. Parameters: token_encoder/..., fwd/layer_{0,1}/{w_ih,
w_hh, b_ih, b_hh, w_hr}, bwd/..., softmax_kernel [V_pad, P], softmax_bias [V_pad].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import (ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, check_ranges, register_preset,
                          with_vocab_size)
from lmjax.data.elmo_data import BOUNDARY, CHAR_VOCAB, bilm_data, char_ids
from lmjax.layers import VOCAB_MULTIPLE, CharCNN, Embed, StackedRecurrent, padded_size, param
from lmjax.ops.losses import log_uniform_sample, sampled_softmax_cross_entropy, token_cross_entropy
from lmjax.ops.recurrent import reverse_within_lengths
from lmjax.train.task import Data, Task, register_task

ENCODERS = ("char", "word")


def parse_filters(spec: str) -> tuple[tuple[int, int], ...]:
    """"1:32,2:32,3:64" -> ((1, 32), (2, 32), (3, 64)): (width, number of filters) per convolution."""
    try:
        out = tuple((int(w), int(n)) for w, n in (item.split(":") for item in spec.split(",")))
    except ValueError:
        out = ()
    if not out or any(w < 1 or n < 1 for w, n in out):
        raise ConfigError(f"model.filters={spec!r} is invalid: write WIDTH:COUNT pairs, e.g. 1:32,2:32,3:64")
    return out


@dataclass(frozen=True)
class ElmoConfig:
    family: ClassVar[str] = "elmo"
    vocab_size: int = 0  # softmax words; 0 = the tokenizer's (the table is padded to a multiple of 128)
    encoder: str = "char"  # token layer: char (CharCNN over the word's characters) or word (an embedding table)
    max_chars: int = 24  # character slots per word, BOW and EOW included (bilm-tf: 50)
    char_dim: int = 16
    filters: str = "1:32,2:32,3:64,4:128,5:128,6:128"  # (width:count) of the convolutions (bilm-tf: 2048 in all)
    highway: int = 1  # highway layers over the filters (bilm-tf: 2)
    proj: int = 128  # P: the token layer's and each LSTM's output width (bilm-tf: 512)
    hidden: int = 512  # H: LSTM cells (bilm-tf: 4096)
    layers: int = 2
    cell_clip: float = 3.0
    proj_clip: float = 3.0
    dropout: float = 0.1
    sampled: int = 0  # > 0: sampled softmax over this many candidates in training (bilm-tf: 8192)

    def validate(self) -> None:
        check_ranges("model", self, (
            ("vocab_size", self.vocab_size >= 0, ">= 0 (0 = the tokenizer's size)"),
            ("encoder", self.encoder in ENCODERS, f"one of {', '.join(ENCODERS)}"),
            ("max_chars", self.max_chars >= 3, ">= 3 (BOW, a character, EOW)"),
            ("char_dim", self.char_dim >= 1, ">= 1"),
            ("highway", self.highway >= 0, ">= 0"),
            ("proj", self.proj >= 1, ">= 1"),
            ("hidden", self.hidden >= 1, ">= 1"),
            ("layers", self.layers >= 1, ">= 1"),
            ("cell_clip", self.cell_clip >= 0, ">= 0 (0 = none)"),
            ("proj_clip", self.proj_clip >= 0, ">= 0 (0 = none)"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("sampled", self.sampled >= 0, ">= 0 (0 = the full softmax)"),
        ))
        parse_filters(self.filters)
        if self.encoder == "char" and max(w for w, _ in parse_filters(self.filters)) > self.max_chars:
            raise ConfigError(f"model.filters={self.filters!r} has a filter wider than model.max_chars="
                              f"{self.max_chars}: narrow the filters or raise max_chars")

    @property
    def padded_vocab_size(self) -> int:
        return padded_size(self.vocab_size, VOCAB_MULTIPLE)


class BiLM(nn.Module):
    """The bidirectional LM (module docstring). `__call__` trains (each direction on its own stream, carried);
    `layers` gives the three feature layers of given sentences; `logits` is the shared softmax."""

    config: ElmoConfig

    def setup(self):
        cfg = self.config
        if cfg.encoder == "char":
            self.token_encoder = CharCNN(CHAR_VOCAB, cfg.char_dim, parse_filters(cfg.filters), cfg.highway, cfg.proj)
        else:
            self.token_encoder = Embed(cfg.vocab_size, cfg.proj, pad_to=VOCAB_MULTIPLE)
        stack = dict(cell="lstm", hidden=cfg.hidden, num_layers=cfg.layers, proj=cfg.proj, dropout=cfg.dropout,
                     residual=True, cell_clip=cfg.cell_clip, proj_clip=cfg.proj_clip)
        self.fwd = StackedRecurrent(**stack)
        self.bwd = StackedRecurrent(**stack)
        self.drop = nn.Dropout(cfg.dropout)
        self.softmax_kernel = param(self, "softmax_kernel", (cfg.padded_vocab_size, cfg.proj), ("vocab", "embed"),
                                    nn.initializers.normal(1.0 / np.sqrt(cfg.proj)))
        self.softmax_bias = param(self, "softmax_bias", (cfg.padded_vocab_size,), ("vocab",), nn.initializers.zeros)

    def tokens(self, inputs: jax.Array) -> jax.Array:
        """The token layer: chars [B, T, C] (encoder char) or vocabulary ids [B, T] (encoder word) -> [B, T, P]."""
        return self.token_encoder(inputs).astype(jnp.float32)

    def __call__(self, fwd_inputs: jax.Array, bwd_inputs: jax.Array, carry: tuple, *, train: bool = False):
        """((forward top [B, T, P], backward top [B, T, P]), (forward carry, backward carry)); each direction's
        inputs already in its reading order (the backward stream is the reversed text)."""
        tops, finals = [], []
        for stack, inputs, state in ((self.fwd, fwd_inputs, carry[0]), (self.bwd, bwd_inputs, carry[1])):
            x = self.drop(self.tokens(inputs), deterministic=not train)
            final, top = stack(x, state, train=train)
            tops.append(self.drop(top, deterministic=not train))
            finals.append(final)
        return tuple(tops), tuple(finals)

    def layers(self, inputs: jax.Array, lengths: jax.Array) -> jax.Array:
        """[L + 1, B, T, 2P]: the token layer twice, then each LSTM layer's [forward; backward], over each row's
        first lengths[b] words (zeros after them), both directions from a zero state."""
        x = self.tokens(inputs)
        valid = (jnp.arange(x.shape[1]) < lengths[:, None])[..., None]
        x = jnp.where(valid, x, 0.0)
        _, fwd = self.fwd(x, None, lengths=lengths, all_layers=True)
        _, bwd = self.bwd(reverse_within_lengths(x, lengths), None, lengths=lengths, all_layers=True)
        out = [jnp.concatenate([x, x], -1)]
        out += [jnp.concatenate([f, reverse_within_lengths(b, lengths)], -1) for f, b in zip(fwd, bwd, strict=True)]
        return jnp.where(valid[None], jnp.stack(out), 0.0)

    def logits(self, h: jax.Array) -> jax.Array:
        """fp32 logits [..., V] of the shared softmax (the padding rows dropped)."""
        V = self.config.vocab_size
        return h.astype(jnp.float32) @ self.softmax_kernel[:V].T + self.softmax_bias[:V]


def zero_carry(cfg: ElmoConfig, batch: int) -> tuple:
    """(forward, backward) zero states: per layer (h [batch, P], c [batch, H])."""
    one = StackedRecurrent("lstm", cfg.hidden, cfg.layers, proj=cfg.proj, parent=None).zero_state(batch)
    return (one, one)


def model_config(run_cfg: RunConfig, vocab_size: int) -> ElmoConfig:
    cfg: ElmoConfig = with_vocab_size(run_cfg.model, vocab_size)
    cfg.validate()
    if run_cfg.train.dtype != "float32":
        raise ConfigError(f"train.dtype={run_cfg.train.dtype!r}: ELMo computes in float32; set train.dtype=float32")
    return cfg


def _input_key(cfg: ElmoConfig, direction: str) -> str:
    return f"{direction}_chars" if cfg.encoder == "char" else f"{direction}_words"


def flops_per_position(cfg: ElmoConfig) -> float:
    """Training FLOPs (6 per multiply-add: forward and backward) per stream position, both directions."""
    macs = 0.0
    if cfg.encoder == "char":
        filters = parse_filters(cfg.filters)
        width = sum(n for _, n in filters)
        macs += sum(w * n * cfg.char_dim * (cfg.max_chars - w + 1) for w, n in filters)
        macs += cfg.highway * 2 * width * width + width * cfg.proj
    macs += cfg.layers * (4 * cfg.hidden * (cfg.proj + cfg.proj) + cfg.hidden * cfg.proj)
    macs += (cfg.sampled + 1 if cfg.sampled else cfg.vocab_size) * cfg.proj
    return 6.0 * 2 * macs


@register_task("elmo", "pretrain", data=bilm_data,
               description="bidirectional LM (forward and backward streams, states carried across batches)")
def make_pretraining_task(run_cfg: RunConfig, data: Data) -> Task:
    """L = (CE_fwd + CE_bwd) / 2 per word: loss_sum = (Σ CE_fwd + Σ CE_bwd) / 2 over count = words per direction;
    aux fwd_loss, bwd_loss (the engine reports eval_fwd_loss, eval_bwd_loss: exp of them is each perplexity)."""
    cfg = model_config(run_cfg, data.vocab_size)
    model = BiLM(cfg)
    B, T = run_cfg.data.batch_size, run_cfg.data.seq_len
    shape = (B, T, cfg.max_chars) if cfg.encoder == "char" else (B, T)
    example = {_input_key(cfg, d): jax.ShapeDtypeStruct(shape, jnp.int32) for d in ("fwd", "bwd")}
    example |= {f"{d}_targets": jax.ShapeDtypeStruct((B, T), jnp.int32) for d in ("fwd", "bwd")}
    example["reset"] = jax.ShapeDtypeStruct((B,), jnp.bool_)

    def init_fn(rng, batch):
        b = batch["fwd_targets"].shape[0]
        return model.init(rng, batch[_input_key(cfg, "fwd")], batch[_input_key(cfg, "bwd")], zero_carry(cfg, b))

    def loss_fn(params, batch, rng, train, carry):
        rngs = {"dropout": rng} if rng is not None else {}
        (fwd, bwd), final = model.apply({"params": params}, batch[_input_key(cfg, "fwd")],
                                        batch[_input_key(cfg, "bwd")], carry, train=train, rngs=rngs)
        mask = batch.get("mask")
        sums = []
        for i, (top, targets) in enumerate(((fwd, batch["fwd_targets"]), (bwd, batch["bwd_targets"]))):
            if train and cfg.sampled:
                key = jax.random.fold_in(jax.random.fold_in(rng, 7), i)
                candidates = log_uniform_sample(key, cfg.sampled, cfg.vocab_size)
                s, n = sampled_softmax_cross_entropy(top, targets, params["softmax_kernel"], params["softmax_bias"],
                                                     candidates, cfg.vocab_size, mask)
            else:
                logits = model.apply({"params": params}, top, method=BiLM.logits)
                s, n = token_cross_entropy(logits, targets, mask)
            sums.append(s)
        return (sums[0] + sums[1]) / 2, n, {"fwd_loss": sums[0], "bwd_loss": sums[1]}, final

    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn,
                flops_per_token=flops_per_position(cfg), tokens_per_example=T,
                init_carry=lambda b: zero_carry(cfg, b))


# -------------------------------------------------------------------------------------------------------- features


def sentence_inputs(cfg: ElmoConfig, tokenizer, sentences: Sequence[Sequence[str]], *, multiple: int = 1
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, lengths) for `BiLM.layers`: each sentence (a list of words) wrapped in `</s>` ... `</s>`, padded to
    the longest rounded up to `multiple`: chars [B, T, C] (encoder char) or vocabulary ids [B, T] (encoder word);
    lengths [B]."""
    rows = [[BOUNDARY, *s, BOUNDARY] for s in sentences]
    width = -(-max(len(r) for r in rows) // multiple) * multiple
    lengths = np.array([len(r) for r in rows], np.int32)
    if cfg.encoder == "char":
        out = np.zeros((len(rows), width, cfg.max_chars), np.int32)
        for i, r in enumerate(rows):
            out[i, :len(r)] = char_ids(r, cfg.max_chars)
    else:
        out = np.zeros((len(rows), width), np.int32)
        unk = tokenizer.unk_id
        for i, r in enumerate(rows):
            out[i, :len(r)] = [tokenizer.token_to_id(w) if tokenizer.token_to_id(w) is not None else unk for w in r]
    return out, lengths


@functools.lru_cache(maxsize=8)
def _layers_fn(model: BiLM):
    return jax.jit(lambda p, x, n: model.apply({"params": p}, x, n, method=BiLM.layers))


def embed(model: BiLM, params, tokenizer, sentences: Sequence[Sequence[str]], *, batch_size: int = 64,
          progress: bool = False) -> list[np.ndarray]:
    """ELMo's features of each sentence (a list of words): float32 [L + 1, len(sentence), 2P] per sentence, the
    boundary words dropped. Sentences run in batches of similar length (widths rounded up to 8: few compilations)."""
    from tqdm import tqdm

    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out: list[np.ndarray | None] = [None] * len(sentences)
    fn = _layers_fn(model)
    starts = range(0, len(order), batch_size)
    for start in tqdm(starts, desc="ELMo features", unit="batch", disable=not progress):
        chunk = order[start:start + batch_size]
        rows = [sentences[i] for i in chunk]
        inputs, lengths = sentence_inputs(model.config, tokenizer, rows, multiple=8)
        pad = batch_size - len(rows) if len(order) > batch_size else 0  # one batch shape for the whole run
        if pad:
            inputs = np.concatenate([inputs, np.zeros((pad, *inputs.shape[1:]), inputs.dtype)])
            lengths = np.concatenate([lengths, np.ones(pad, lengths.dtype)])
        feats = np.asarray(fn(params, inputs, lengths))
        for j, i in enumerate(chunk):
            out[i] = feats[:, j, 1:len(sentences[i]) + 1]
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------- presets


@register_preset("elmo_imdb", "ELMo (char-CNN, 2 x LSTMP 512/128) pre-trained on the 50k IMDB reviews (BERT's corpus)")
def elmo_imdb() -> RunConfig:
    """bilm-tf's recipe at CPU scale: Adagrad lr 0.2 (optax's initial accumulator 0.1; bilm-tf 1.0), global clip
    10, batch 64 x 20 words, dropout 0.1, a 32,768-word softmax sampled with 1,024 candidates; one epoch of the 12M training words is
    about 9,500 steps. Resumable."""
    return RunConfig(
        name="elmo_imdb", task="pretrain", model=ElmoConfig(sampled=1024),
        data=DataConfig(dataset="imdb", tokenizer="word", vocab_size=32768, seq_len=20, batch_size=64,
                        eval_batch_size=64),
        optim=OptimConfig(name="adagrad", lr=0.2, schedule="constant", clip_norm=10.0, weight_decay=0.0),
        train=TrainConfig(steps=9500, eval_every=500, eval_batches=100, log_every=50, checkpoint_every=500,
                          keep_checkpoints=2, best_metric="", sample_tokens=0, steps_per_call=10),
    )


@register_preset("elmo_smoke", "a tiny ELMo (char-CNN, 2 x LSTMP 32/16) on 200 IMDB reviews for 20 steps")
def elmo_smoke() -> RunConfig:
    return RunConfig(
        name="elmo_smoke", task="pretrain",
        model=ElmoConfig(max_chars=12, char_dim=4, filters="1:4,2:4,3:8", highway=1, proj=16, hidden=32,
                         sampled=32),
        data=DataConfig(dataset="imdb", tokenizer="word", vocab_size=512, seq_len=8, batch_size=4,
                        eval_batch_size=4, max_examples=200),
        optim=OptimConfig(name="adagrad", lr=0.2, schedule="constant", clip_norm=10.0, weight_decay=0.0),
        train=TrainConfig(steps=20, eval_every=10, eval_batches=4, log_every=5, checkpoint_every=10,
                          best_metric="", sample_tokens=0, steps_per_call=5),
    )
