"""BERT: a bidirectional Transformer encoder pretrained by masked language modelling (Devlin et al., 2019).

    e_t = LN(E[x_t] + P[t] + S[s_t]),  h_0 = Dropout(e)           token + position + segment embeddings, LayerNorm
    h_l = Block_l(h_{l-1}; mask)                                   post-LN blocks, l = 1..L (no final LayerNorm)
    pooled = tanh(W_p h_L[:, 0] + b_p)                             the pooler, on the first ([CLS]) token

    Block(x) = LN_2(a + Dropout(MLP(a))),  a = LN_1(x + Dropout(Attn(x; mask)))
    MLP(a) = GELU(a W_1^T + b_1) W_2^T + b_2                       exact erf GELU; C -> intermediate -> C

Attn is bidirectional multi-head attention with a key padding mask: mask [B, T] is True at real tokens, and padded
keys get exactly zero weight, so whatever a padded position holds (and however many there are) never changes the
outputs at the real ones. The blocks, embeddings and LayerNorms are `lmjax.layers`' (`TransformerBlock` with
norm="post", activation "gelu"); Attn's dropout acts on the softmax weights (`attention_dropout`), the other dropout
(`dropout`) on the embeddings and both residual branches, as in BERT.

Heads, each on the trunk `Bert` (parameters under "bert"):

    MLM (`BertForPreTraining`):  z = LN(GELU(h W_t^T + b_t)),  logits = z E^T + b_v     decoder tied to the token table
    NSP (`BertForPreTraining`):  logits = pooled W_n^T + b_n                            2-way (IsNext, NotNext)
    `BertForSequenceClassification`:  logits = Dropout(pooled) W_c^T + b_c              [B, num_labels]
    `BertForTokenClassification`:    logits_t = Dropout(h_L[:, t]) W_c^T + b_c          [B, T, num_labels]

The vocabulary is padded to a multiple of 128 (`lmjax.layers.padded_size`): the token table E and the MLM bias b_v
have V_pad rows, the padding rows are never looked up, and the padded MLM logits are -inf. `BertForPreTraining`
without NSP (nsp=False) has no pooler: it is HF's BertForMaskedLM. `bert_inputs` builds BERT's input format,
[CLS] A [SEP] (B [SEP]) with segment ids 0 for A and 1 for B, padded to a fixed length.

Every parameter is fp32 with logical axis names (`config.DEFAULT_RULES`); square C x C kernels (pooler, MLM
transform) name their output axis "mlp" (an array cannot repeat a logical name). Matmuls run in the compute
`dtype`; the residual stream, LayerNorms and softmax stay fp32. Initialisation is BERT's: every matrix and table
~ N(0, init_std^2), biases 0, LayerNorms the identity.

Parameter paths of `Bert`: tok_embed [V_pad, C], pos_embed [max_position, C], seg_embed [type_vocab, C], ln_embed,
layers_i/{attn/{c_attn [3, H, D, C], c_proj [C, H, D]}, ln_1, mlp/{c_fc, c_proj}, ln_2}, pooler (unless
add_pooler=False); heads: mlm/{dense, ln, bias}, nsp, classifier. `lmjax.interop.hf_bert` maps them to and from
Hugging Face's BERT checkpoints. `BERT_SIZES` holds the named shapes: Turc et al.'s (2019) compact Tiny, Mini, Small and
Medium, Devlin et al.'s Base and Large, and a seconds-long "smoke"; `bert_config(name)` makes a config of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import (ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, check_ranges, register_preset,
                          with_vocab_size)
from lmjax.data.bert_tasks import bert_inputs, pretraining_data, sentence_pair_data, tagging_data
from lmjax.ops.losses import token_cross_entropy
from lmjax.train.task import Data, Task, register_task, tagging_corpus_metrics
from lmjax.layers import (ACTIVATIONS, VOCAB_MULTIPLE, Dropout, LayerNorm, Linear, TransformerBlock, attend, embedding,
                          lookup, mask_padded_vocab, padded_size)


@dataclass(frozen=True)
class BertConfig:
    family: ClassVar[str] = "bert"
    vocab_size: int = 0  # 0 = take it from the tokenizer (the table is padded to a multiple of 128)
    hidden: int = 768  # C
    layers: int = 12  # L
    heads: int = 12  # H (head_dim = hidden // heads)
    intermediate: int = 3072  # the MLP's hidden units (4C in every published size)
    max_position: int = 512  # rows of the learned position table: the longest input
    type_vocab: int = 2  # segment (token type) ids
    dropout: float = 0.1  # on the embeddings and every residual branch (HF: hidden_dropout_prob)
    attention_dropout: float = 0.1  # on the attention weights (HF: attention_probs_dropout_prob)
    classifier_dropout: float | None = None  # before a classification head; None = dropout
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"  # of the MLP and the MLM transform: gelu (exact erf), gelu_tanh, relu
    init_std: float = 0.02  # std of every matrix and table at initialisation (HF: initializer_range)
    attention: str = "auto"  # `implementation` of ops.dot_product_attention
    # pre-training data (task pretrain; lmjax.data.bert_tasks): create_pretraining_data.py's options
    mlm_prob: float = 0.15  # masked_lm_prob
    max_predictions: int = 20  # max_predictions_per_seq
    dupe_factor: int = 0  # 0 = dynamic masking (fresh masks every batch); N = N statically masked copies
    whole_word_mask: bool = False  # mask a word's pieces together (static masking only)
    nsp: bool = True  # pre-train with next-sentence prediction besides the MLM

    def validate(self) -> None:
        """Ranges a run config is checked against when it is built; `check_config` checks the vocabulary size."""
        check_ranges("model", self, (
            ("vocab_size", self.vocab_size >= 0, ">= 0 (0 = the tokenizer's size)"),
            ("hidden", self.hidden >= 1 and self.hidden % max(self.heads, 1) == 0,
             f"a positive multiple of model.heads={self.heads}"),
            ("layers", self.layers >= 1, ">= 1"),
            ("heads", self.heads >= 1, ">= 1"),
            ("intermediate", self.intermediate >= 1, ">= 1"),
            ("max_position", self.max_position >= 2, ">= 2 (room for [CLS] and [SEP])"),
            ("type_vocab", self.type_vocab >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("attention_dropout", 0 <= self.attention_dropout < 1, "in [0, 1)"),
            ("classifier_dropout", self.classifier_dropout is None or 0 <= self.classifier_dropout < 1,
             "None (= model.dropout) or in [0, 1)"),
            ("layer_norm_eps", self.layer_norm_eps > 0, "> 0"),
            ("activation", self.activation in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
            ("init_std", self.init_std > 0, "> 0"),
            ("attention", self.attention in ("auto", "xla", "jax"), "one of auto, xla, jax"),
            ("mlm_prob", 0 < self.mlm_prob < 1, "in (0, 1)"),
            ("max_predictions", self.max_predictions >= 1, ">= 1"),
            ("dupe_factor", self.dupe_factor >= 0, ">= 0 (0 = dynamic masking)"),
        ))

    @property
    def padded_vocab_size(self) -> int:
        return padded_size(self.vocab_size, VOCAB_MULTIPLE)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def head_dropout(self) -> float:
        """The classification heads' dropout rate."""
        return self.dropout if self.classifier_dropout is None else self.classifier_dropout


# Turc et al. (2019), "Well-Read Students Learn Better": (layers, hidden) of the compact BERTs Google released, with
# heads = hidden / 64 and intermediate = 4 hidden; Base and Large are Devlin et al.'s. "smoke" is a seconds-long test.
BERT_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(layers=2, hidden=128, heads=2, intermediate=512),
    "mini": dict(layers=4, hidden=256, heads=4, intermediate=1024),
    "small": dict(layers=4, hidden=512, heads=8, intermediate=2048),
    "medium": dict(layers=8, hidden=512, heads=8, intermediate=2048),
    "base": dict(layers=12, hidden=768, heads=12, intermediate=3072),
    "large": dict(layers=24, hidden=1024, heads=16, intermediate=4096),
    "smoke": dict(layers=2, hidden=32, heads=2, intermediate=128, max_position=64),
}


def bert_config(size: str, **overrides: Any) -> BertConfig:
    """The BertConfig of `BERT_SIZES[size]`, with `overrides` (any BertConfig field) applied."""
    if size not in BERT_SIZES:
        raise ConfigError(f"unknown BERT size {size!r}: choose one of {', '.join(BERT_SIZES)}")
    cfg = BertConfig(**{**BERT_SIZES[size], **overrides})
    cfg.validate()
    return cfg


def check_config(cfg: BertConfig, seq_len: int | None = None) -> None:
    """Raise a one-line `ConfigError` that names the fix for the first problem found."""
    cfg.validate()
    if cfg.vocab_size <= 0:
        raise ConfigError(f"model.vocab_size={cfg.vocab_size}: set it to the tokenizer's vocabulary size (or build "
                          f"the config with the tokenizer's size) before building the model")
    if seq_len is not None and seq_len > cfg.max_position:
        raise ConfigError(f"data.seq_len={seq_len} exceeds model.max_position={cfg.max_position}: "
                          f"lower data.seq_len or raise model.max_position")


# ---------------------------------------------------------------------------------------------------------- model


class Bert(nn.Module):
    """The encoder: tokens int [B, T] -> (hidden fp32 [B, T, C], pooled fp32 [B, C], or None with add_pooler=False).

    segments: int [B, T] segment ids (default 0); mask: bool [B, T], True at real tokens (default: all real);
    positions: int [B, T] rows of the position table (default 0..T-1). train=True enables dropout (needs
    rngs={"dropout": key}). `attend(z)` is the tied output projection z E^T [..., V_pad] (no bias, no masking).
    """

    config: BertConfig
    add_pooler: bool = True
    dtype: Any = jnp.float32  # compute dtype of the matmuls

    def setup(self):
        cfg = self.config
        check_config(cfg)
        init = nn.initializers.normal(cfg.init_std)
        self.tok_embed = embedding(self, "tok_embed", cfg.padded_vocab_size, cfg.hidden, init=init)
        self.pos_embed = embedding(self, "pos_embed", cfg.max_position, cfg.hidden, axes=("positions", "embed"),
                                   init=init)
        self.seg_embed = embedding(self, "seg_embed", cfg.type_vocab, cfg.hidden, axes=("segments", "embed"),
                                   init=init)
        self.ln_embed = LayerNorm(cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)
        self.blocks = [TransformerBlock(
            num_heads=cfg.heads, features=cfg.hidden, mlp_hidden=cfg.intermediate, norm="post", causal=False,
            dropout=cfg.dropout, attention_dropout=cfg.attention_dropout, activation=cfg.activation,
            epsilon=cfg.layer_norm_eps, std=cfg.init_std, out_std=cfg.init_std, implementation=cfg.attention,
            dtype=self.dtype, name=f"layers_{i}") for i in range(cfg.layers)]
        if self.add_pooler:
            self.pooler = Linear((cfg.hidden,), ("mlp", "embed"), std=cfg.init_std, dtype=self.dtype)

    def __call__(self, tokens, segments=None, mask=None, *, positions=None, train: bool = False):
        cfg = self.config
        batch, length = tokens.shape
        if length > cfg.max_position:
            raise ValueError(f"input of length {length} is longer than model.max_position={cfg.max_position}: "
                             f"truncate it (bert_inputs(..., max_len={cfg.max_position})) or raise max_position")
        if segments is None:
            segments = jnp.zeros((batch, length), jnp.int32)
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
        x = (lookup(self.tok_embed, tokens, "vocab") + lookup(self.pos_embed, positions, "positions")
             + lookup(self.seg_embed, segments, "segments"))
        x = self.drop(self.ln_embed(x), deterministic=not train)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))
        key_mask = None if mask is None else jnp.asarray(mask, bool)
        for block in self.blocks:
            x = block(x, key_mask=key_mask, train=train)
        if not self.add_pooler:
            return x, None
        pooled = jnp.tanh(self.pooler(x[:, 0]).astype(jnp.float32))
        return x, nn.with_logical_constraint(pooled, ("batch", "embed"))

    def attend(self, z):
        """z [..., C] -> z E^T [..., V_pad] through the token table, in the compute dtype."""
        return attend(self.tok_embed, z, self.dtype)


class MLMHead(nn.Module):
    """BERT's masked-LM head: hidden [..., C] -> logits fp32 [..., V_pad] = LN(act(dense(h))) E^T + bias, padded
    columns at -inf. `bert` is the trunk whose token table the decoder shares."""

    config: BertConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, hidden, bert: Bert):
        cfg = self.config
        z = Linear((cfg.hidden,), ("mlp", "embed"), std=cfg.init_std, dtype=self.dtype, name="dense")(hidden)
        z = LayerNorm(cfg.layer_norm_eps, name="ln")(ACTIVATIONS[cfg.activation](z))
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ("vocab",)),
                          (cfg.padded_vocab_size,), jnp.float32)
        logits = bert.attend(z).astype(jnp.float32) + bias
        return mask_padded_vocab(logits, cfg.vocab_size)


def _gather(hidden, positions):
    """hidden [B, T, C] at int positions [B, M] -> [B, M, C]."""
    return jnp.take_along_axis(hidden, positions[..., None].astype(jnp.int32), axis=1)


class BertForPreTraining(nn.Module):
    """BERT's pretraining model: (mlm_logits fp32 [B, T or M, V_pad], nsp_logits fp32 [B, 2]); with nsp=False (HF's
    BertForMaskedLM: no pooler, no NSP head) the MLM logits alone.

    masked_positions: int [B, M], the positions to predict (BERT's max_predictions_per_seq), so the output projection
    is computed at those only; default: every position. Other arguments as `Bert`'s.
    """

    config: BertConfig
    nsp: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, segments=None, mask=None, *, masked_positions=None, positions=None,
                 train: bool = False):
        bert = Bert(self.config, add_pooler=self.nsp, dtype=self.dtype, name="bert")
        hidden, pooled = bert(tokens, segments, mask, positions=positions, train=train)
        if masked_positions is not None:
            hidden = _gather(hidden, masked_positions)
        mlm = nn.with_logical_constraint(MLMHead(self.config, self.dtype, name="mlm")(hidden, bert),
                                         ("batch", "length", "vocab"))
        if not self.nsp:
            return mlm
        nsp = Linear((2,), ("classes", "embed"), std=self.config.init_std, dtype=self.dtype, name="nsp")(pooled)
        return mlm, nsp.astype(jnp.float32)


class BertForSequenceClassification(nn.Module):
    """tokens int [B, T] (segments, mask as `Bert`'s) -> logits fp32 [B, num_labels] from Dropout(pooled)."""

    config: BertConfig
    num_labels: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, segments=None, mask=None, *, positions=None, train: bool = False):
        cfg = self.config
        _, pooled = Bert(cfg, dtype=self.dtype, name="bert")(tokens, segments, mask, positions=positions, train=train)
        pooled = Dropout(cfg.head_dropout)(pooled, deterministic=not train)
        logits = Linear((self.num_labels,), ("classes", "embed"), std=cfg.init_std, dtype=self.dtype,
                        name="classifier")(pooled)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "classes"))


class BertForTokenClassification(nn.Module):
    """tokens int [B, T] (segments, mask as `Bert`'s) -> logits fp32 [B, T, num_labels] from each token's
    Dropout(h_L); the trunk has no pooler (as HF's)."""

    config: BertConfig
    num_labels: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, segments=None, mask=None, *, positions=None, train: bool = False):
        cfg = self.config
        hidden, _ = Bert(cfg, add_pooler=False, dtype=self.dtype, name="bert")(tokens, segments, mask,
                                                                               positions=positions, train=train)
        hidden = Dropout(cfg.head_dropout)(hidden, deterministic=not train)
        logits = Linear((self.num_labels,), ("classes", "embed"), std=cfg.init_std, dtype=self.dtype,
                        name="classifier")(hidden)
        return nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "length", "classes"))


def count_params(params) -> int:
    """Number of scalars in a (possibly boxed or abstract) parameter tree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(nn.meta.unbox(params)))


# ------------------------------------------------------------------------------------------------- engine contract

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def model_config(run_cfg: RunConfig, vocab_size: int) -> BertConfig:
    """`run_cfg.model` with the tokenizer's vocabulary size, checked against data.seq_len."""
    cfg: BertConfig = with_vocab_size(run_cfg.model, vocab_size)
    check_config(cfg, run_cfg.data.seq_len)
    if run_cfg.train.dtype not in DTYPES:
        raise ConfigError(f"train.dtype={run_cfg.train.dtype!r} is unknown: choose one of {', '.join(DTYPES)}")
    return cfg


def _rngs(rng):
    return {"dropout": rng} if rng is not None else {}


def _matmul_flops(cfg: BertConfig, seq_len: int) -> float:
    """Training FLOPs per input position of the encoder: 6 per matmul weight (lookups excluded) plus attention's
    12 L C T (scores and values, forward and backward)."""
    per_layer = 4 * cfg.hidden * cfg.hidden + 2 * cfg.hidden * cfg.intermediate
    return 6.0 * cfg.layers * per_layer + 12.0 * cfg.layers * cfg.hidden * seq_len


@register_task("bert", "pretrain", data=pretraining_data,
               description="masked LM (15%, 80/10/10) + next-sentence prediction on documents (BERT pre-training)")
def make_pretraining_task(run_cfg: RunConfig, data: Data) -> Task:
    """BERT's pre-training loss, L = mean MLM cross entropy over the predicted positions + mean NSP cross entropy
    over the rows (the reference's total_loss). The engine's (sum, count) contract with count = rows: loss_sum =
    L x rows. aux sums (means per row in the engine's reports): mlm_loss, mlm_accuracy (over predictions), nsp_loss
    and nsp_accuracy (over rows), each scaled as loss_sum is; with model.nsp False, the MLM alone."""
    cfg = model_config(run_cfg, data.vocab_size)
    model = BertForPreTraining(cfg, nsp=cfg.nsp, dtype=DTYPES[run_cfg.train.dtype])
    B, T, P = run_cfg.data.batch_size, run_cfg.data.seq_len, cfg.max_predictions
    i32 = jnp.int32
    example = {**{k: jax.ShapeDtypeStruct((B, T), i32) for k in ("tokens", "segments", "mask")},
               **{k: jax.ShapeDtypeStruct((B, P), i32) for k in ("masked_positions", "masked_ids")},
               "masked_weights": jax.ShapeDtypeStruct((B, P), jnp.float32),
               **{k: jax.ShapeDtypeStruct((B,), i32) for k in ("nsp_labels", "real")}}

    def init_fn(rng, batch):
        return model.init(rng, batch["tokens"], batch["segments"], batch["mask"] > 0,
                          masked_positions=batch["masked_positions"])

    def loss_fn(params, batch, rng, train):
        out = model.apply({"params": params}, batch["tokens"], batch["segments"], batch["mask"] > 0,
                          masked_positions=batch["masked_positions"], train=train, rngs=_rngs(rng))
        mlm_logits, nsp_logits = out if cfg.nsp else (out, None)
        mlm_logits = mlm_logits[..., :cfg.vocab_size]
        predicted = batch["masked_weights"] > 0
        mlm_sum, mlm_n = token_cross_entropy(mlm_logits, batch["masked_ids"], predicted)
        real = batch["real"] > 0
        rows = jnp.sum(real).astype(jnp.float32)
        per_row = rows / jnp.maximum(mlm_n, 1.0)  # a mean over predictions, reported per row
        mlm_hit = jnp.sum((jnp.argmax(mlm_logits, -1) == batch["masked_ids"]) & predicted)
        aux = {"mlm_loss": mlm_sum * per_row, "mlm_accuracy": mlm_hit * per_row}
        loss = aux["mlm_loss"]
        if cfg.nsp:
            nsp_sum, _ = token_cross_entropy(nsp_logits, batch["nsp_labels"], real)
            aux["nsp_loss"] = nsp_sum
            aux["nsp_accuracy"] = jnp.sum((jnp.argmax(nsp_logits, -1) == batch["nsp_labels"]) & real).astype(
                jnp.float32)
            loss = loss + nsp_sum
        return loss, rows, aux

    head = 6.0 * (cfg.hidden * cfg.hidden + cfg.padded_vocab_size * cfg.hidden) * P / T  # MLM head, at P of T
    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn,
                flops_per_token=_matmul_flops(cfg, T) + head, tokens_per_example=T)


# Freezing (optim.freeze regexes over parameter paths) for the transfer regimes: the whole encoder but the pooler
# (which the classifier reads and NSP pre-trained), or its embeddings and bottom half of the layers.
def freeze_encoder() -> tuple[str, ...]:
    return (r"^bert/(?!pooler/)",)


def freeze_bottom(layers: int) -> tuple[str, ...]:
    """The embeddings and the first `layers` blocks."""
    return (r"^bert/(tok_embed|pos_embed|seg_embed|ln_embed)(/|$)",
            *(rf"^bert/layers_{i}/" for i in range(layers)))


@register_task("bert", "classify", data=sentence_pair_data,
               description="sentence or sentence-pair classification on [CLS] (SST-2, RTE)")
def make_classifier_task(run_cfg: RunConfig, data: Data) -> Task:
    """Cross entropy of BertForSequenceClassification's logits; count = rows (a padding row, label -1, counts for
    nothing); aux "accuracy"."""
    cfg = model_config(run_cfg, data.vocab_size)
    num = int(data.info.get("num_classes", 2))
    model = BertForSequenceClassification(cfg, num, dtype=DTYPES[run_cfg.train.dtype])
    B, T = run_cfg.data.batch_size, run_cfg.data.seq_len
    example = {**{k: jax.ShapeDtypeStruct((B, T), jnp.int32) for k in ("tokens", "segments", "mask")},
               "labels": jax.ShapeDtypeStruct((B,), jnp.int32)}

    def init_fn(rng, batch):
        return model.init(rng, batch["tokens"], batch["segments"], batch["mask"] > 0)

    def loss_fn(params, batch, rng, train):
        logits = model.apply({"params": params}, batch["tokens"], batch["segments"], batch["mask"] > 0, train=train,
                             rngs=_rngs(rng))
        labels = batch["labels"]
        real = labels >= 0
        labels = jnp.maximum(labels, 0)
        loss, count = token_cross_entropy(logits, labels, real)
        return loss, count, {"accuracy": jnp.sum((jnp.argmax(logits, -1) == labels) & real).astype(jnp.float32)}

    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn,
                flops_per_token=_matmul_flops(cfg, T), tokens_per_example=T)


@register_task("bert", "tag", data=tagging_data,
               description="token tagging on each word's first WordPiece (UD EWT UPOS, CoNLL-2000 chunks)")
def make_tagging_task(run_cfg: RunConfig, data: Data) -> Task:
    """Cross entropy of BertForTokenClassification's logits at each word's first piece; count = words; aux
    "accuracy" (per word). Evaluation replaces the accuracy by one over every word of the split (a word cut by the
    position table counts as wrong) and, for IOB chunk tags, adds conlleval's phrase precision, recall and f1."""
    cfg = model_config(run_cfg, data.vocab_size)
    model = BertForTokenClassification(cfg, int(data.info["num_classes"]), dtype=DTYPES[run_cfg.train.dtype])
    B, T = run_cfg.data.batch_size, run_cfg.data.seq_len
    example = {k: jax.ShapeDtypeStruct((B, T), jnp.int32) for k in ("tokens", "segments", "mask", "labels")}

    def init_fn(rng, batch):
        return model.init(rng, batch["tokens"], batch["segments"], batch["mask"] > 0)

    def logits_of(params, batch, rng=None, train=False):
        return model.apply({"params": params}, batch["tokens"], batch["segments"], batch["mask"] > 0, train=train,
                           rngs=_rngs(rng))

    def loss_fn(params, batch, rng, train):
        logits = logits_of(params, batch, rng, train)
        labels = batch["labels"]
        words = labels >= 0
        labels = jnp.maximum(labels, 0)
        loss, count = token_cross_entropy(logits, labels, words)
        return loss, count, {"accuracy": jnp.sum((jnp.argmax(logits, -1) == labels) & words).astype(jnp.float32)}

    predict = jax.jit(lambda params, batch: jnp.argmax(logits_of(params, batch), -1))

    # a word past the position table has no prediction: "O" for the phrases, wrong for the accuracy
    corpus_metrics = tagging_corpus_metrics(data, predict)

    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn,
                flops_per_token=_matmul_flops(cfg, T), tokens_per_example=T, corpus_metrics=corpus_metrics)


# ------------------------------------------------------------------------------------------------------- inference


def fill_mask(model: BertForPreTraining, params, tokenizer, text: str, *, top_k: int = 5
              ) -> list[list[tuple[str, float]]]:
    """For each [MASK] in `text`, the top_k (piece, probability) of the MLM head, most likely first."""
    inputs = bert_inputs(tokenizer, [text], max_len=model.config.max_position)
    row = inputs["tokens"][0][inputs["mask"][0]]
    where = np.flatnonzero(row == tokenizer.mask_id)
    if where.size == 0:
        raise ConfigError(f"{text!r} has no [MASK] token: write [MASK] where a word should be predicted")
    n = len(row)
    width = min(model.config.max_position, -(-n // 16) * 16)
    tokens = np.full((1, width), tokenizer.pad_id, np.int32)
    tokens[0, :n] = row
    mask = np.zeros((1, width), bool)
    mask[0, :n] = True
    out = model.apply({"params": params}, jnp.asarray(tokens), None, jnp.asarray(mask),
                      masked_positions=jnp.asarray(where[None], jnp.int32))
    logits = (out[0] if model.nsp else out)[0, :, :model.config.vocab_size]
    probs = np.asarray(jax.nn.softmax(logits.astype(jnp.float32), -1))
    result = []
    for p in probs:
        best = np.argsort(-p)[:top_k]
        result.append([(tokenizer.id_to_token(int(i)), float(p[i])) for i in best])
    return result


def _pad_rows(rows: list[np.ndarray], pad_id: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    width = min(max_len, max(16, 1 << (max(map(len, rows)) - 1).bit_length()))
    tokens = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        tokens[i, :len(r)], mask[i, :len(r)] = r[:width], True
    return tokens, mask


def classify(model: BertForSequenceClassification, params, tokenizer, texts: Sequence[str],
             pairs: Sequence[str] | None = None) -> np.ndarray:
    """Class probabilities [N, num_labels] of texts (or text pairs), truncated to the position table."""
    from lmjax.data.bert_tasks import encode_pairs

    rows = encode_pairs(tokenizer, texts, pairs, model.config.max_position)
    tokens, mask = _pad_rows([ids for ids, _ in rows], tokenizer.pad_id, model.config.max_position)
    segments, _ = _pad_rows([segs for _, segs in rows], 0, model.config.max_position)
    logits = model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(segments), jnp.asarray(mask))
    return np.asarray(jax.nn.softmax(logits, -1))


def tag(model: BertForTokenClassification, params, tokenizer, sentences: Sequence[Sequence[str]]
        ) -> list[list[int]]:
    """Each word's predicted label id (read at its first WordPiece) for sentences given as lists of words; words
    past the position table get -1."""
    from lmjax.data.bert_tasks import align_tags

    aligned = [align_tags(tokenizer, words, [0] * len(words), model.config.max_position) for words in sentences]
    tokens, mask = _pad_rows([ids for ids, _, _ in aligned], tokenizer.pad_id, model.config.max_position)
    labels, _ = _pad_rows([y for _, y, _ in aligned], -1, model.config.max_position)
    best = np.asarray(jnp.argmax(model.apply({"params": params}, jnp.asarray(tokens), None, jnp.asarray(mask)), -1))
    out = []
    for row, (words, (_, _, kept)) in enumerate(zip(sentences, aligned)):
        firsts = best[row][labels[row] >= 0][:kept].tolist()
        out.append(firsts + [-1] * (len(words) - kept))
    return out


# --------------------------------------------------------------------------------------------------------- presets

PRETRAIN_DIR = "runs/bert_imdb_mini"


def _pretrain(name: str, size: str, *, steps: int, batch: int, lr: float, warmup: int, seq_len: int = 128,
              eval_every: int = 500, **model) -> RunConfig:
    return RunConfig(
        name=name, task="pretrain", model=bert_config(size, max_position=max(seq_len, 64), **model),
        data=DataConfig(dataset="imdb", tokenizer="wordpiece", vocab_size=8192, seq_len=seq_len, batch_size=batch,
                        eval_batch_size=64),
        optim=OptimConfig(lr=lr, end_lr=0.0, schedule="linear", warmup_steps=warmup, weight_decay=0.01, b2=0.999,
                          eps=1e-6, clip_norm=1.0),
        train=TrainConfig(steps=steps, eval_every=eval_every, eval_batches=16, log_every=20,
                          checkpoint_every=eval_every, keep_checkpoints=2, best_metric="", sample_tokens=0,
                          steps_per_call=10),
    )


@register_preset("bert_imdb_mini", "BERT-Mini (4x256) pre-trained with MLM + NSP on the 50k IMDB reviews (11.6M words)")
def bert_imdb_mini() -> RunConfig:
    """BERT's recipe (AdamW, weight decay 0.01, warmup then linear decay, eps 1e-6) in a CPU budget: 3,600 steps
    (29.5M positions, about 2 hours on 2 Zen 3 cores), sequences of 128, batch 64, dynamic
    masking, a WordPiece vocabulary of 8,192 fitted on the training reviews; every 100th
    review held out for the MLM/NSP evaluation. Resumable: run it again to continue."""
    return _pretrain("bert_imdb_mini", "mini", steps=3600, batch=64, lr=5e-4, warmup=300, eval_every=250)


@register_preset("bert_pretrain_smoke", "a 2x32 BERT pre-trained for 20 steps on 300 IMDB reviews: seconds-long")
def bert_pretrain_smoke() -> RunConfig:
    cfg = _pretrain("bert_pretrain_smoke", "smoke", steps=20, batch=8, lr=1e-3, warmup=2, seq_len=64, eval_every=10)
    return _replace(cfg, data=dict(vocab_size=512, max_examples=300, eval_batch_size=8),
                    train=dict(eval_batches=2, log_every=5, steps_per_call=1))


def _replace(cfg: RunConfig, **sections: dict) -> RunConfig:
    import dataclasses

    return dataclasses.replace(cfg, **{k: dataclasses.replace(getattr(cfg, k), **v) for k, v in sections.items()})


# Fine-tuning: (dataset, task, seq_len, batch, steps, metric); BERT's recipe: AdamW, warmup over 10% of the steps
# then linear decay to 0, weight decay 0.01, dropout 0.1. No checkpoint selection: the last step is the model
# (evaluated every quarter of the run for the curves).
FINETUNE_TASKS = {
    "sst2": ("sst2", "classify", 64, 32, 4000, "eval_accuracy"),      # 1.9 epochs of 67,349 sentences
    "rte": ("rte", "classify", 128, 16, 600, "eval_accuracy"),        # 3.9 epochs of 2,490 pairs
    "upos": ("ud_english_ewt", "tag", 128, 32, 1600, "eval_accuracy"),  # 4.1 epochs of 12,544 sentences
    "chunk": ("conll2000", "tag", 128, 32, 1200, "eval_f1"),           # 4.6 epochs of 8,436 sentences
}
# Regimes: (learning rate, what is frozen, initialised from the pre-training run)
REGIMES = {
    "scratch": (1e-4, (), False),
    "frozen": (1e-3, freeze_encoder(), True),
    "partial": (1e-4, freeze_bottom(2), True),
    "finetune": (1e-4, (), True),
}


def finetune_config(task: str, regime: str, *, pretrained: str = PRETRAIN_DIR, size: str = "mini") -> RunConfig:
    """The preset bert_<task>_<regime>: `task` one of FINETUNE_TASKS, `regime` one of REGIMES; the tokenizer (and,
    but for scratch, the encoder) from the pre-training run `pretrained`, whose 128 positions bound every input
    (evaluation included: a longer one is truncated, its cut words count as errors). Seeds: --set train.seed=K
    --set data.seed=K."""
    dataset, kind, seq_len, batch, steps, metric = FINETUNE_TASKS[task]
    lr, freeze, init = REGIMES[regime]
    return RunConfig(
        name=f"bert_{task}_{regime}", task=kind, model=bert_config(size, max_position=128),
        data=DataConfig(dataset=dataset, tokenizer="wordpiece", seq_len=seq_len, batch_size=batch,
                        eval_batch_size=64, tokenizer_dir=f"{pretrained}/tokenizer"),
        optim=OptimConfig(lr=lr, end_lr=0.0, schedule="linear", warmup_steps=steps // 10, weight_decay=0.01,
                          b2=0.999, eps=1e-6, clip_norm=1.0, freeze=freeze),
        train=TrainConfig(steps=steps, eval_every=steps // 4, eval_batches=0, log_every=50,
                          checkpoint_every=steps // 4, keep_checkpoints=1, best_metric="", sample_tokens=0,
                          steps_per_call=1,  # batches vary in width (16, 32, 64, ...): one step per call
                          init_from=pretrained if init else "", init_target="bert" if init else "",
                          init_source="bert" if init else ""),
    )


def _register_finetune_presets() -> None:
    for task in FINETUNE_TASKS:
        for regime in REGIMES:
            what = {"scratch": "trained from scratch (same architecture and tokenizer)",
                    "frozen": "a head on the frozen pre-trained encoder (its pooler trains)",
                    "partial": "the embeddings and bottom 2 layers frozen, the rest fine-tuned",
                    "finetune": "the whole pre-trained encoder fine-tuned"}[regime]
            register_preset(f"bert_{task}_{regime}", f"BERT-Mini on {FINETUNE_TASKS[task][0]}: {what}")(
                lambda t=task, r=regime: finetune_config(t, r))


_register_finetune_presets()


def _smoke_finetune(name: str, dataset: str, kind: str) -> RunConfig:
    """A seconds-long fine-tuning run from bert_pretrain_smoke's run directory."""
    return RunConfig(
        name=name, task=kind, model=bert_config("smoke"),
        data=DataConfig(dataset=dataset, tokenizer="wordpiece", seq_len=32, batch_size=8, eval_batch_size=16,
                        max_examples=64, tokenizer_dir="runs/bert_pretrain_smoke/tokenizer"),
        optim=OptimConfig(lr=1e-3, schedule="linear", warmup_steps=2),
        train=TrainConfig(steps=10, eval_every=10, eval_batches=4, log_every=5, checkpoint_every=10,
                          sample_tokens=0, best_metric="eval_accuracy", init_from="runs/bert_pretrain_smoke",
                          init_source="bert", init_target="bert"),
    )


@register_preset("bert_classify_smoke", "bert_pretrain_smoke's encoder fine-tuned on 64 RTE pairs for 10 steps")
def bert_classify_smoke() -> RunConfig:
    return _smoke_finetune("bert_classify_smoke", "rte", "classify")


@register_preset("bert_tag_smoke", "bert_pretrain_smoke's encoder fine-tuned on 64 CoNLL-2000 sentences, 10 steps")
def bert_tag_smoke() -> RunConfig:
    return _smoke_finetune("bert_tag_smoke", "conll2000", "tag")

