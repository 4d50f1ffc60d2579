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

from lmjax.config import ConfigError, check_ranges
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


# ----------------------------------------------------------------------------------------------------------- inputs


def _truncate_pair(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """HF's "longest_first" truncation (tokenizers' LongestFirst) of a and b to at most `budget` ids in all.

    The shorter sequence keeps its n_s ids and the longer keeps budget - n_s, unless n_s exceeds half the budget:
    then the shorter keeps budget // 2 and the longer the rest (A counts as the shorter on a tie). Ids are dropped
    from the ends."""
    la, lb = len(a), len(b)
    if la + lb <= budget:
        return a, b
    short = min(la, lb)
    keep_short = short if 2 * short <= budget else budget // 2
    keep_long = budget - keep_short
    la, lb = (keep_long, keep_short) if la > lb else (keep_short, keep_long)
    return a[:la], b[:lb]


def bert_inputs(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                max_len: int) -> dict[str, np.ndarray]:
    """BERT's inputs for a batch: [CLS] A [SEP] (B [SEP]), truncated longest-first to `max_len` and right-padded.

    Returns "tokens" int32 [N, max_len] (padding: the tokenizer's [PAD] id), "segments" int32 (0 for [CLS] A [SEP],
    1 for B [SEP], 0 on padding) and "mask" bool (True at real tokens): HF's tokenizer(texts, pairs,
    truncation=True, padding="max_length", max_length=max_len) as input_ids, token_type_ids and attention_mask.
    `tokenizer` is a `WordPieceTokenizer` (it needs cls_id, sep_id and pad_id).
    """
    cls_id, sep_id, pad_id = (getattr(tokenizer, name, None) for name in ("cls_id", "sep_id", "pad_id"))
    if None in (cls_id, sep_id, pad_id):
        raise ValueError("bert_inputs needs a tokenizer with [CLS], [SEP] and [PAD] tokens: use a WordPieceTokenizer "
                         "trained by lmjax or read from BERT's vocab.txt")
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"bert_inputs got {len(texts)} texts and {len(pairs)} pairs: give one pair per text")
    specials = 2 if pairs is None else 3
    if max_len < specials:
        raise ValueError(f"max_len={max_len} leaves no room for the {specials} special tokens: use max_len > "
                         f"{specials}")
    n = len(texts)
    tokens = np.full((n, max_len), pad_id, np.int32)
    segments = np.zeros((n, max_len), np.int32)
    mask = np.zeros((n, max_len), bool)
    for i, text in enumerate(texts):
        a = list(tokenizer.encode(text))
        b = [] if pairs is None else list(tokenizer.encode(pairs[i]))
        a, b = _truncate_pair(a, b, max_len - specials)
        first = [cls_id, *a, sep_id]
        row = first + ([] if pairs is None else [*b, sep_id])
        tokens[i, : len(row)] = row
        segments[i, len(first): len(row)] = 1
        mask[i, : len(row)] = True
    return {"tokens": tokens, "segments": segments, "mask": mask}
