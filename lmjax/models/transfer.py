"""The transfer table's downstream model: one small BiLSTM and a linear head over a word encoder's features, so the
rows of the table differ only in where the word vectors come from.

    f_1..f_n = encoder(w_1..w_n)                       random table | word2vec table | ELMo scalar mix of its 3 layers
    h_1..h_n = BiLSTM(Dropout(f))                      one layer, `hidden` units per direction (lengths respected)
    tagging:         logits_t = W Dropout(h_t) + b     a tag per word
    classification:  logits = W Dropout(max_t h_t) + b  max-pooled over the words (RTE: premise </s> hypothesis)

Encoders (`model.encoder`):
- random: a table over the task's training words, N(0, 1/d), trained with the task;
- word2vec: the table of a word2vec-format file (`model.vectors`, e.g. `lmjax word2vec train --corpus imdb`),
  frozen with `optim.freeze=^encoder/` (row word2vec) or fine-tuned (row word2vec_ft); words it lacks start at 0;
- elmo: a pre-trained `lmjax.models.elmo.BiLM` (its config from `model.elmo_preset`, its weights from
  `train.init_from` = the ELMo run, `init_target=encoder`), frozen; its three layers ([x; x], [h1], [h2], width
  2P) mixed by `lmjax.layers.ScalarMix` (bilm-tf's options: `mix_layer_norm`, `mix_l2` on the weights,
  `top_only`). The features are computed over `</s>` w_1..w_n `</s>`, as ELMo read its text.
- bert, gpt: the pre-trained BERT encoder (its last layer at each word's first WordPiece, [CLS] and [SEP] for the
  boundaries) or GPT trunk (LN_f(h_L) at each word's last piece: a causal model has read the word there), config
  from `model.trunk_preset`, weights from `train.init_from`; frozen, or fine-tuned with the task
  (`model.finetune`, its dropout then on, optim.freeze empty, a 10x lower learning rate).

Loss: mean cross entropy (per word for tagging, per sentence for classification), plus mix_l2 * Σ w_j² for ELMo;
aux accuracy; tagging evaluation adds conlleval's chunk precision, recall and F1 for IOB tags (corpus_metrics).
Parameters: encoder/..., mix/{w, gamma}, lstm/layer_0/{fwd_*, bwd_*}, head/{kernel, bias}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import (ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, check_ranges, get_preset,
                          register_preset, with_vocab_size)
from lmjax.data.word_tasks import word_task_data
from lmjax.layers import VOCAB_MULTIPLE, Dropout, Embed, Linear, ScalarMix, StackedRecurrent
from lmjax.ops.losses import token_cross_entropy
from lmjax.ops.mixing import scalar_mix_l2
from lmjax.train.task import Data, Task, register_task, tagging_corpus_metrics

ENCODERS = ("random", "word2vec", "elmo", "bert", "gpt")
TRUNKS = {"elmo": "elmo_imdb", "bert": "bert_imdb_mini", "gpt": "gpt_imdb"}  # default pre-training presets


@dataclass(frozen=True)
class TransferConfig:
    family: ClassVar[str] = "transfer"
    encoder: str = "random"  # random | word2vec | elmo | bert | gpt
    vocab_size: int = 0  # 0 = the vocabulary's (data); padded to a multiple of 128 in the table
    embed_dim: int = 300  # random: the table's width (word2vec: the file's; ELMo: 2P)
    vectors: str = ""  # word2vec: a word2vec-format file
    elmo_preset: str = "elmo_imdb"  # elmo: the pre-training preset, whose model config the encoder takes
    trunk_preset: str = ""  # bert, gpt: the pre-training preset ("" = bert_imdb_mini, gpt_imdb)
    finetune: bool = False  # the encoder trains with the task (its dropout on); else frozen features
    max_pieces: int = 128  # bert, gpt: the longest input (their positions); later pieces are cut
    max_chars: int = 0  # elmo: character slots per word (0 = the ELMo preset's)
    hidden: int = 200  # BiLSTM units per direction
    layers: int = 1
    dropout: float = 0.5  # on the features and before the head
    mix_layer_norm: bool = False
    mix_l2: float = 0.0
    top_only: bool = False

    def validate(self) -> None:
        check_ranges("model", self, (
            ("encoder", self.encoder in ENCODERS, f"one of {', '.join(ENCODERS)}"),
            ("vocab_size", self.vocab_size >= 0, ">= 0 (0 = the vocabulary's size)"),
            ("embed_dim", self.embed_dim >= 1, ">= 1"),
            ("hidden", self.hidden >= 1, ">= 1"),
            ("layers", self.layers >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("mix_l2", self.mix_l2 >= 0, ">= 0"),
        ))


def elmo_config(cfg: TransferConfig, vocab_size: int):
    """The ELMo encoder's config: model.elmo_preset's, with the ELMo run's vocabulary size."""
    from lmjax.models.elmo import ElmoConfig

    base = get_preset(cfg.elmo_preset).model
    if not isinstance(base, ElmoConfig):
        raise ConfigError(f"model.elmo_preset={cfg.elmo_preset!r} is not an ELMo preset: name one (e.g. elmo_imdb)")
    import dataclasses

    return dataclasses.replace(base, vocab_size=vocab_size, dropout=0.0,
                               **({"max_chars": cfg.max_chars} if cfg.max_chars else {}))


def trunk_config(cfg: TransferConfig, vocab_size: int):
    """The BERT or GPT encoder's config: its pre-training preset's, with the tokenizer's vocabulary size."""
    import dataclasses

    name = cfg.trunk_preset or TRUNKS[cfg.encoder]
    base = get_preset(name).model
    if type(base).family != cfg.encoder:
        raise ConfigError(f"model.trunk_preset={name!r} is a {type(base).family!r} preset, not a {cfg.encoder!r} one")
    return dataclasses.replace(base, vocab_size=vocab_size)


class TransferModel(nn.Module):
    """batch (words [B, W], chars [B, W, C], lengths [B]) -> logits [B, labels] or [B, W - 2, labels]."""

    config: TransferConfig
    num_labels: int
    tagging: bool
    vectors: np.ndarray | None = None  # word2vec's table, rows in vocabulary order
    elmo: object = None  # the pre-trained encoder's config (ELMo's, BERT's or GPT's)

    def setup(self):
        cfg = self.config
        if cfg.encoder == "elmo":
            from lmjax.models.elmo import BiLM

            self.encoder = BiLM(self.elmo)
            self.mix = ScalarMix(self.elmo.layers + 1, layer_norm=cfg.mix_layer_norm, top_only=cfg.top_only)
        elif cfg.encoder == "bert":
            from lmjax.models.bert import Bert

            self.encoder = Bert(self.elmo, add_pooler=False)
        elif cfg.encoder == "gpt":
            from lmjax.models.gpt import GPT

            self.encoder = GPT(self.elmo)
        else:
            rows = cfg.vocab_size
            if self.vectors is not None:
                table = np.zeros((-(-rows // VOCAB_MULTIPLE) * VOCAB_MULTIPLE, self.vectors.shape[1]), np.float32)
                table[:len(self.vectors)] = self.vectors
                init = lambda *_: jnp.asarray(table)  # noqa: E731
                width = self.vectors.shape[1]
            else:
                width = cfg.embed_dim
                init = nn.initializers.normal(1.0 / math.sqrt(width))
            self.encoder = Embed(rows, width, pad_to=VOCAB_MULTIPLE, embedding_init=init)
        self.lstm = StackedRecurrent("lstm", cfg.hidden, cfg.layers, bidirectional=True, dropout=cfg.dropout)
        self.drop = Dropout(cfg.dropout)
        self.head = Linear((self.num_labels,), ("classes", "embed"), std=0.02)

    def features(self, batch, train: bool = False) -> jax.Array:
        """[B, W, D] per position (the boundary words included)."""
        encoder, tune = self.config.encoder, train and self.config.finetune
        if encoder in ("bert", "gpt"):
            if encoder == "bert":
                hidden, _ = self.encoder(batch["pieces"], None, batch["piece_mask"] > 0, train=tune)
            else:
                hidden = self.encoder(batch["pieces"], train=tune, outputs="hidden")
            return jnp.take_along_axis(hidden.astype(jnp.float32), batch["first"][..., None], axis=1)
        if encoder == "elmo":
            inputs = batch["chars"] if self.elmo.encoder == "char" else batch["words"]
            layers = self.encoder.layers(inputs, batch["lengths"])
            mask = jnp.arange(inputs.shape[1]) < batch["lengths"][:, None]
            return self.mix(layers, mask)
        return self.encoder(batch["words"])

    def __call__(self, batch, *, train: bool = False) -> jax.Array:
        f = self.features(batch, train)[:, 1:-1]  # the words: drop the opening boundary (and one padding column)
        n = batch["lengths"] - 2
        _, h = self.lstm(self.drop(f, deterministic=not train), lengths=n, train=train)
        valid = (jnp.arange(h.shape[1]) < n[:, None])[..., None]
        if not self.tagging:
            h = jnp.max(jnp.where(valid, h, -jnp.inf), axis=1)
            h = jnp.where(jnp.isfinite(h), h, 0.0)
        return self.head(self.drop(h, deterministic=not train)).astype(jnp.float32)


def model_from(run_cfg: RunConfig, data: Data) -> TransferModel:
    cfg: TransferConfig = with_vocab_size(run_cfg.model, data.vocab_size)
    cfg.validate()
    if run_cfg.train.dtype != "float32":
        raise ConfigError(f"train.dtype={run_cfg.train.dtype!r}: the transfer models compute in float32")
    vectors = data.info.get("vectors") if cfg.encoder == "word2vec" else None
    if cfg.encoder == "word2vec" and vectors is None:
        raise ConfigError("model.encoder=word2vec needs model.vectors: a word2vec-format file")
    trunk = (elmo_config(cfg, data.vocab_size) if cfg.encoder == "elmo" else
             trunk_config(cfg, data.vocab_size) if cfg.encoder in ("bert", "gpt") else None)
    return TransferModel(cfg, int(data.info["num_classes"]), data.info["kind"] == "tag", vectors, trunk)


def _task(run_cfg: RunConfig, data: Data) -> Task:
    model = model_from(run_cfg, data)
    cfg, tagging = model.config, model.tagging
    B, W = run_cfg.data.batch_size, 16
    example = {"words": jax.ShapeDtypeStruct((B, W), jnp.int32), "lengths": jax.ShapeDtypeStruct((B,), jnp.int32),
               "labels": jax.ShapeDtypeStruct((B, W - 2) if tagging else (B,), jnp.int32)}
    if cfg.encoder in ("bert", "gpt"):
        del example["words"]
        example |= {k: jax.ShapeDtypeStruct((B, W), jnp.int32) for k in ("pieces", "piece_mask", "first")}
    if cfg.encoder == "elmo":
        example["chars"] = jax.ShapeDtypeStruct((B, W, model.elmo.max_chars), jnp.int32)

    def init_fn(rng, batch):
        return model.init(rng, {k: jnp.zeros(v.shape, v.dtype) + (2 if k == "lengths" else 0)
                                for k, v in batch.items()})

    def logits_of(params, batch, rng=None, train=False):
        return model.apply({"params": params}, batch, train=train, rngs={"dropout": rng} if rng is not None else {})

    def loss_fn(params, batch, rng, train):
        logits = logits_of(params, batch, rng, train)
        labels = batch["labels"]
        real = labels >= 0
        labels = jnp.maximum(labels, 0)
        loss, count = token_cross_entropy(logits, labels, real)
        if cfg.encoder == "elmo" and cfg.mix_l2 and not cfg.top_only:
            loss = loss + scalar_mix_l2(params["mix"]["w"], cfg.mix_l2) * count
        return loss, count, {"accuracy": jnp.sum((jnp.argmax(logits, -1) == labels) & real).astype(jnp.float32)}

    corpus_metrics = None
    if tagging:
        predict = jax.jit(lambda params, batch: jnp.argmax(logits_of(params, batch), -1))
        corpus_metrics = tagging_corpus_metrics(data, predict, accuracy=False)  # the loss counts every word

    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn, count_tokens=True,
                corpus_metrics=corpus_metrics)


@register_task("transfer", "classify", data=word_task_data,
               description="sentence (pair) classification: a BiLSTM max-pooled over a word encoder's features")
def make_classify_task(run_cfg: RunConfig, data: Data) -> Task:
    if data.info["kind"] != "classify":
        raise ConfigError(f"data.dataset={run_cfg.data.dataset!r} is a tagging task: use task=tag")
    return _task(run_cfg, data)


@register_task("transfer", "tag", data=word_task_data,
               description="a tag per word: a BiLSTM over a word encoder's features (UPOS, chunks)")
def make_tag_task(run_cfg: RunConfig, data: Data) -> Task:
    if data.info["kind"] != "tag":
        raise ConfigError(f"data.dataset={run_cfg.data.dataset!r} is a sentence task: use task=classify")
    return _task(run_cfg, data)


# --------------------------------------------------------------------------------------------------------- presets
# task -> (dataset, task kind, training examples (0 = all), steps, metric); batch 32, Adam 1e-3, dropout 0.5.
TASKS = {
    "sst2": ("sst2", "classify", 0, 4000, "eval_accuracy"),
    "sst2_2k": ("sst2", "classify", 2000, 600, "eval_accuracy"),
    "rte": ("rte", "classify", 0, 600, "eval_accuracy"),
    "upos": ("ud_english_ewt", "tag", 0, 2000, "eval_accuracy"),
    "chunk": ("conll2000", "tag", 0, 1500, "eval_f1"),
}
VECTORS = "runs/word2vec_imdb/vectors.bin"
# The pre-trained runs the rows start from (a run directory, or one `lmjax export` wrote): (directory, subtree)
PRETRAINED = {"elmo": ("runs/elmo_imdb", ""), "bert": ("runs/bert_imdb_mini", "bert"), "gpt": ("runs/gpt_imdb", "")}
# row -> (model overrides, frozen encoder, learning rate)
ROWS = {
    "random": (dict(encoder="random"), False, 1e-3),
    "word2vec": (dict(encoder="word2vec", vectors=VECTORS), True, 1e-3),
    "word2vec_ft": (dict(encoder="word2vec", vectors=VECTORS), False, 1e-3),
    "elmo": (dict(encoder="elmo", mix_l2=0.001), True, 1e-3),
    "gpt": (dict(encoder="gpt"), True, 1e-3),
    "gpt_ft": (dict(encoder="gpt", finetune=True), False, 1e-4),
    "bert": (dict(encoder="bert"), True, 1e-3),
    "bert_ft": (dict(encoder="bert", finetune=True), False, 1e-4),
}


def transfer_config(task: str, row: str) -> RunConfig:
    """The preset transfer_<task>_<row>."""
    dataset, kind, limit, steps, metric = TASKS[task]
    model, frozen, lr = ROWS[row]
    source = PRETRAINED.get(model["encoder"])
    return RunConfig(
        name=f"transfer_{task}_{row}", task=kind, model=TransferConfig(**model),
        data=DataConfig(dataset=dataset, tokenizer="word", seq_len=128, batch_size=32, eval_batch_size=64,
                        max_examples=limit),
        optim=OptimConfig(lr=lr, end_lr=0.0, schedule="linear", warmup_steps=steps // 20, weight_decay=0.0,
                          clip_norm=5.0, freeze=(r"^encoder/",) if frozen else ()),
        train=TrainConfig(steps=steps, eval_every=steps // 4, eval_batches=0, log_every=50,
                          checkpoint_every=steps // 4, keep_checkpoints=1, best_metric="", sample_tokens=0,
                          init_from=source[0] if source else "", init_source=source[1] if source else "",
                          init_target="encoder" if source else ""),
    )


def _register() -> None:
    for task in TASKS:
        for row in ROWS:
            register_preset(f"transfer_{task}_{row}", f"transfer table: {row} features + BiLSTM on {task}")(
                lambda t=task, r=row: transfer_config(t, r))


_register()


@register_preset("transfer_tag_smoke", "elmo_smoke's features + a small BiLSTM on 64 CoNLL-2000 sentences, 10 steps")
def transfer_tag_smoke() -> RunConfig:
    return RunConfig(
        name="transfer_tag_smoke", task="tag",
        model=TransferConfig(encoder="elmo", elmo_preset="elmo_smoke", hidden=16, mix_l2=0.001),
        data=DataConfig(dataset="conll2000", tokenizer="word", seq_len=32, batch_size=8, eval_batch_size=16,
                        max_examples=64),
        optim=OptimConfig(lr=3e-3, schedule="constant", freeze=(r"^encoder/",)),
        train=TrainConfig(steps=10, eval_every=10, eval_batches=0, log_every=5, checkpoint_every=10,
                          best_metric="", sample_tokens=0, init_from="runs/elmo_smoke", init_target="encoder"),
    )


@register_preset("transfer_classify_smoke", "a random word table + a small BiLSTM on 64 RTE pairs, 10 steps")
def transfer_classify_smoke() -> RunConfig:
    return RunConfig(
        name="transfer_classify_smoke", task="classify", model=TransferConfig(encoder="random", embed_dim=16,
                                                                              hidden=16),
        data=DataConfig(dataset="rte", tokenizer="word", seq_len=64, batch_size=8, eval_batch_size=16,
                        max_examples=64),
        optim=OptimConfig(lr=3e-3, schedule="constant"),
        train=TrainConfig(steps=10, eval_every=10, eval_batches=4, log_every=5, checkpoint_every=10,
                          best_metric="", sample_tokens=0),
    )
