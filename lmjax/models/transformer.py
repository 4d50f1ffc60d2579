"""The Transformer encoder-decoder (Vaswani et al., 2017, "Attention Is All You Need") for translation.

    x_0 = sqrt(d) E[src] + PE(0..S-1)                  source embeddings (the table shared with the target's)
    x_l = Block_l(x_{l-1}; src_mask)                    encoder: self-attention + feed-forward, residual + LayerNorm
    m = x_L (post-LN) or LN_enc(x_L) (pre-LN)          memory: the keys and values of every cross-attention
    y_0 = sqrt(d) E[tgt_in] + PE(0..T-1)                target embeddings (bos + target, shifted right)
    y_l = Block_l(y_{l-1}; causal self-attention, cross-attention over m)
    p(y_t | y_<t, x) = softmax(y_L E^T)_t               output through the tied table (or its own projection)

Each block is `lmjax.layers.TransformerBlock`: post-LN as the paper (x = LN(x + Dropout(Sublayer(x)))) or pre-LN
(x = x + Dropout(Sublayer(LN(x))), a final LayerNorm per stack), ReLU feed-forward of `d_ff` units, dropout on the
residual branches, the attention weights and the feed-forward activations. Positions are the paper's sinusoids or
a learned table. Source and target share one subword vocabulary (`lmjax.data.translation`); `tie` = "all" shares
the source embedding, the target embedding and the output projection (Press & Wolf, 2017), "target" the last two,
"none" none. Training minimises label-smoothed cross entropy (eps = `label_smoothing`, spread over the real
vocabulary) and reports the plain NLL beside it.

Decoding (`greedy`, `beam`) is incremental: the encoder runs once, every cross-attention's keys and values are
computed once from its memory, and the decoder's self-attention keeps a KV cache, so each step costs one position.
Parameter paths: embed (shared) or src_embed/tgt_embed, pos_embed (learned positions), encoder/layers_i,
encoder/ln_f (pre-LN), decoder/layers_i, decoder/ln_f (pre-LN), out (untied output); layers use
`TransformerBlock`'s names (attn/c_attn [3, H, D, C], which is torch's in_proj_weight [3C, C] reshaped).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, check_ranges
from lmjax.config import register_preset
from lmjax.data.pipeline import eval_limit
from lmjax.layers import Dropout, Embed, LayerNorm, Linear, TransformerBlock, init_kv_cache, padded_size
from lmjax.ops.losses import token_cross_entropy
from lmjax.ops.positional import sinusoidal
from lmjax.ops.sampling import beam_search, cut_at_eos
from lmjax.scoring import bleu, bleu_signature  # noqa: F401 (bleu_signature re-exported beside bleu)
from lmjax.train.task import Data, Task, register_task

NORMS = ("post", "pre")
POSITIONS = ("sinusoidal", "learned")
TIES = ("all", "target", "none")


@dataclass(frozen=True)
class TransformerConfig:
    family: ClassVar[str] = "transformer"
    vocab_size: int = 0  # 0 = the joint tokenizer's size (the table is padded to a multiple of 128)
    d_model: int = 512
    num_heads: int = 8
    enc_layers: int = 6
    dec_layers: int = 6
    d_ff: int = 2048
    norm: str = "post"  # "post" (the paper) or "pre"
    positions: str = "sinusoidal"  # or "learned"
    max_len: int = 256  # longest source or target, in tokens (the position table's size)
    dropout: float = 0.1  # on the embeddings and on every residual branch
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    activation: str = "relu"
    tie: str = "all"  # "all" (source, target, output), "target" (target and output), "none"
    scale_embeddings: bool = True  # multiply embeddings by sqrt(d_model)
    label_smoothing: float = 0.1
    epsilon: float = 1e-5
    decode_extra: int = 50  # a translation is at most source length + decode_extra tokens (and max_len)
    beam_size: int = 5
    length_penalty: float = 0.6  # GNMT's alpha
    eval_bleu: bool = True  # evaluation translates the split greedily and reports BLEU (eval_bleu)
    eval_sentences: int = 0  # translate only the first N sentences of the split for eval_bleu (0 = all)

    def validate(self) -> None:
        check_ranges("model", self, (
            ("vocab_size", self.vocab_size >= 0, ">= 0 (0 = the tokenizer's size)"),
            ("d_model", self.d_model >= 1 and self.d_model % max(self.num_heads, 1) == 0,
             ">= 1 and a multiple of model.num_heads"),
            ("num_heads", self.num_heads >= 1, ">= 1"),
            ("enc_layers", self.enc_layers >= 1, ">= 1"),
            ("dec_layers", self.dec_layers >= 1, ">= 1"),
            ("d_ff", self.d_ff >= 1, ">= 1"),
            ("norm", self.norm in NORMS, f"one of {', '.join(NORMS)}"),
            ("positions", self.positions in POSITIONS, f"one of {', '.join(POSITIONS)}"),
            ("max_len", self.max_len >= 2, ">= 2"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("attention_dropout", 0 <= self.attention_dropout < 1, "in [0, 1)"),
            ("activation_dropout", 0 <= self.activation_dropout < 1, "in [0, 1)"),
            ("tie", self.tie in TIES, f"one of {', '.join(TIES)}"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("decode_extra", self.decode_extra >= 1, ">= 1"),
            ("beam_size", self.beam_size >= 1, ">= 1"),
            ("eval_sentences", self.eval_sentences >= 0, ">= 0 (0 = all)"),
            ("length_penalty", self.length_penalty >= 0, ">= 0"),
        ))

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads


class Stack(nn.Module):
    """`layers` TransformerBlocks (with cross-attention for the decoder), and a final LayerNorm when pre-LN."""

    config: TransformerConfig
    layers: int
    decoder: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        std = cfg.d_model ** -0.5  # about Xavier's for the d x d projections (fairseq initialises with Xavier)
        self.blocks = [TransformerBlock(
            num_heads=cfg.num_heads, features=cfg.d_model, mlp_hidden=cfg.d_ff, norm=cfg.norm, causal=self.decoder,
            cross_attention=self.decoder, dropout=cfg.dropout, attention_dropout=cfg.attention_dropout,
            activation_dropout=cfg.activation_dropout, activation=cfg.activation, epsilon=cfg.epsilon, std=std,
            out_std=std, dtype=self.dtype, name=f"layers_{i}") for i in range(self.layers)]
        if cfg.norm == "pre":
            self.ln_f = LayerNorm(epsilon=cfg.epsilon)

    def _final(self, x):
        return self.ln_f(x) if self.config.norm == "pre" else x

    def __call__(self, x, mask, memory=None, memory_mask=None, *, train: bool = False):
        """Encoder: x [B, S, C], mask [B, S]. Decoder: x [B, T, C] (causal), mask [B, T], memory [B, S, C] with
        memory_mask [B, S]."""
        for block in self.blocks:
            if self.decoder:
                x = block(x, memory, key_mask=mask, context_mask=memory_mask, train=train)
            else:
                x = block(x, key_mask=mask, train=train)
        return self._final(x)

    def cross_caches(self, memory):
        return [block.encode(memory) for block in self.blocks]

    def step(self, x, caches, cache_index, cross, memory_mask):
        """Decoder: x [B, 1, C] at position cache_index [B] -> (x, new caches)."""
        new = []
        for block, cache, kv in zip(self.blocks, caches, cross):
            x, cache = block(x, key_mask=None, context_mask=memory_mask, cache=cache, cache_index=cache_index,
                             cross_cache=kv)
            new.append(cache)
        return self._final(x), new


class Transformer(nn.Module):
    """`__call__(src, src_mask, tgt_in, tgt_mask, train)` -> fp32 logits [B, T, V_pad] (padding columns -inf) under
    teacher forcing; `encode`, `decoder_caches` and `decode_step` are the pieces of incremental decoding. Matmuls
    run in `dtype` (the run's `train.dtype`); LayerNorms, softmax and the loss stay fp32."""

    config: TransformerConfig
    dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        if cfg.vocab_size <= 0:
            raise ConfigError("model.vocab_size must be > 0: build the model with model_from_config(run_cfg, "
                              "vocab_size) so it takes the tokenizer's size")
        init = nn.initializers.normal(cfg.d_model ** -0.5)  # with the sqrt(d) scale, unit-variance embeddings
        dtype = self.dtype
        table = functools.partial(Embed, cfg.vocab_size, cfg.d_model, pad_to=128, embedding_init=init, dtype=dtype)
        if cfg.tie == "all":
            self.embed = table()
        else:
            self.src_embed, self.tgt_embed = table(), table()
            if cfg.tie == "none":
                self.out = Linear((padded_size(cfg.vocab_size),), ("vocab", "embed"), std=cfg.d_model ** -0.5,
                                  use_bias=False, dtype=dtype)
        if cfg.positions == "learned":
            self.pos_embed = Embed(cfg.max_len, cfg.d_model, axes=("positions", "embed"),
                                   embedding_init=nn.initializers.normal(0.02))
        self.encoder = Stack(cfg, cfg.enc_layers, dtype=dtype)
        self.decoder = Stack(cfg, cfg.dec_layers, decoder=True, dtype=dtype)
        self.drop = Dropout(cfg.dropout)

    # --------------------------------------------------------------------------------------------- embeddings
    def _tables(self):
        return (self.embed, self.embed) if self.config.tie == "all" else (self.src_embed, self.tgt_embed)

    def _positions(self, positions):
        cfg = self.config
        if cfg.positions == "learned":
            return self.pos_embed(positions)
        return sinusoidal(cfg.max_len, cfg.d_model)[positions]

    def embed_tokens(self, ids, positions, *, target: bool, train: bool = False):
        """sqrt(d) E[ids] + PE(positions), dropped out: [B, T] -> fp32 [B, T, C]."""
        cfg = self.config
        x = self._tables()[int(target)](ids)
        if cfg.scale_embeddings:
            x = x * math.sqrt(cfg.d_model)
        return self.drop(x + self._positions(positions), deterministic=not train)

    def logits(self, y):
        """fp32 [..., V_pad] from decoder outputs y [..., C]; columns >= vocab_size are -inf."""
        cfg = self.config
        if cfg.tie == "none":
            out = self.out(y).astype(jnp.float32)
            return jnp.where(jnp.arange(out.shape[-1]) < cfg.vocab_size, out, -jnp.inf)
        return self._tables()[1].attend(y)

    # ------------------------------------------------------------------------------------------------ forward
    def encode_embedded(self, x, src_mask, *, train: bool = False):
        return self.encoder(x, src_mask, train=train)

    def encode(self, src, src_mask, *, train: bool = False):
        """The memory [B, S, C] of sources src [B, S] (int) under src_mask [B, S] (True = a real token)."""
        x = self.embed_tokens(src, jnp.arange(src.shape[1])[None], target=False, train=train)
        return self.encode_embedded(x, src_mask, train=train)

    def decode_embedded(self, y, tgt_mask, memory, src_mask, *, train: bool = False):
        return self.decoder(y, tgt_mask, memory, src_mask, train=train)

    def decode(self, tgt_in, tgt_mask, memory, src_mask, *, train: bool = False):
        """Teacher-forced decoder outputs [B, T, C]."""
        y = self.embed_tokens(tgt_in, jnp.arange(tgt_in.shape[1])[None], target=True, train=train)
        return self.decode_embedded(y, tgt_mask, memory, src_mask, train=train)

    def __call__(self, src, src_mask, tgt_in, tgt_mask=None, *, train: bool = False):
        if tgt_mask is None:
            tgt_mask = jnp.ones(tgt_in.shape, bool)
        memory = self.encode(src, src_mask, train=train)
        return self.logits(self.decode(tgt_in, tgt_mask, memory, src_mask, train=train))

    # --------------------------------------------------------------------------------------------- decoding
    def decoder_caches(self, memory, batch: int, length: int):
        """The empty self-attention caches (one per decoder layer, `length` slots) and the cross-attention keys and
        values of `memory`."""
        cfg = self.config
        caches = [init_kv_cache(batch, length, cfg.num_heads, cfg.head_dim, self.dtype)
                  for _ in range(cfg.dec_layers)]
        return caches, self.decoder.cross_caches(memory)

    def decode_step(self, tokens, index, caches, cross, src_mask):
        """One decoder position: previous tokens [B] at positions index [B] -> (logits [B, V_pad], caches)."""
        y = self.embed_tokens(tokens[:, None], index[:, None], target=True)
        y, caches = self.decoder.step(y, caches, index, cross, src_mask)
        return self.logits(y[:, 0]), caches


def model_from_config(run_cfg: RunConfig, vocab_size: int) -> Transformer:
    cfg: TransformerConfig = run_cfg.model
    cfg = dataclasses.replace(cfg, vocab_size=cfg.vocab_size or vocab_size)
    cfg.validate()  # a config made in code has not been through lmjax.config.validate
    return Transformer(cfg, jnp.dtype(run_cfg.train.dtype))


def init_variables(model: Transformer, rng, batch: int = 2, length: int = 8):
    z = jnp.zeros((batch, length), jnp.int32)
    m = jnp.ones((batch, length), bool)
    return model.init(rng, z, m, z, m)


# ------------------------------------------------------------------------------------------------------ decoding


def decode_length(model: Transformer, src_len: int) -> int:
    """The most tokens a translation of a source `src_len` wide may have (eos included)."""
    cfg = model.config
    return min(cfg.max_len, src_len + cfg.decode_extra)


@functools.partial(jax.jit, static_argnames=("model", "bos_id", "eos_id", "max_len"))
def greedy(model: Transformer, params, src, src_mask, *, bos_id: int, eos_id: int, max_len: int):
    """Greedy decoding of sources src [B, S] -> int32 [B, max_len]: the argmax token at every step, eos_id after a
    row's first eos. Stops early once every row has emitted eos."""

    def run(mdl, src, src_mask):
        b = src.shape[0]
        memory = mdl.encode(src, src_mask)
        caches, cross = mdl.decoder_caches(memory, b, max_len)

        def cond(carry):
            i, _, _, done, _ = carry
            return (i < max_len) & ~jnp.all(done)

        def body(carry):
            i, token, caches, done, out = carry
            logits, caches = mdl.decode_step(token, jnp.full((b,), i, jnp.int32), caches, cross, src_mask)
            token = jnp.where(done, eos_id, jnp.argmax(logits, -1).astype(jnp.int32))
            return i + 1, token, caches, done | (token == eos_id), out.at[:, i].set(token)

        init = (jnp.int32(0), jnp.full((b,), bos_id, jnp.int32), caches, jnp.zeros((b,), bool),
                jnp.full((b, max_len), eos_id, jnp.int32))
        return jax.lax.while_loop(cond, body, init)[-1]

    return nn.apply(run, model)({"params": params}, src, src_mask)


@functools.partial(jax.jit, static_argnames=("model", "bos_id", "eos_id", "pad_id", "max_len", "beam_size",
                                             "length_penalty"))
def beam(model: Transformer, params, src, src_mask, *, bos_id: int, eos_id: int, pad_id: int, max_len: int,
         beam_size: int, length_penalty: float):
    """Beam search (`lmjax.ops.sampling.beam_search`, GNMT length penalty): (sequences int32 [B, beam, max_len],
    padded with pad_id after eos, and scores [B, beam]), best first."""

    def run(mdl, src, src_mask):
        b = src.shape[0]
        memory = mdl.encode(src, src_mask)
        caches, cross = mdl.decoder_caches(memory, b, max_len)

        def step_fn(state, tokens):
            caches, cross, mask, index = state
            logits, caches = mdl.decode_step(tokens, index, caches, cross, mask)
            return logits, (caches, cross, mask, index + 1)

        init = (caches, cross, src_mask, jnp.zeros((b,), jnp.int32))
        return beam_search(step_fn, init, jnp.full((b,), bos_id, jnp.int32), beam_size=beam_size, max_len=max_len,
                           eos_id=eos_id, length_penalty=length_penalty, pad_id=pad_id)

    return nn.apply(run, model)({"params": params}, src, src_mask)


def translate(model: Transformer, params, tokenizer, sentences: list[str], *, beam_size: int = 0,
              batch_size: int = 64, width_multiple: int = 8, length_penalty: float | None = None) -> list[str]:
    """Translations of `sentences` (greedy, or beam search when beam_size > 0), in their order. Sentences are sorted
    by length and padded to a multiple of `width_multiple` in batches of `batch_size` rows (the last filled with
    empty rows), so a few compiled shapes serve any input; an empty sentence translates too."""
    from lmjax.data.translation import encode_lines

    cfg = model.config
    ids = [x[:cfg.max_len] for x in encode_lines(tokenizer, list(sentences))]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[str] = [""] * len(ids)
    lp = cfg.length_penalty if length_penalty is None else length_penalty
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(width_multiple, -(-max(len(ids[i]) for i in rows) // width_multiple) * width_multiple)
        src = np.full((batch_size, width), tokenizer.pad_id, np.int32)
        mask = np.zeros((batch_size, width), bool)
        for r, i in enumerate(rows):
            src[r, :len(ids[i])], mask[r, :len(ids[i])] = ids[i], True
        max_len = decode_length(model, width)
        kw = dict(bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id, max_len=max_len)
        if beam_size:
            tokens = beam(model, params, src, mask, pad_id=tokenizer.pad_id, beam_size=beam_size,
                          length_penalty=float(lp), **kw)[0][:, 0]
        else:
            tokens = greedy(model, params, src, mask, **kw)
        tokens = np.asarray(tokens)
        for r, i in enumerate(rows):
            out[i] = tokenizer.decode(cut_at_eos(tokens[r], tokenizer.eos_id))
    return out


# ------------------------------------------------------------------------------------------------------ data, task


def make_data(run_cfg: RunConfig, tokenizer=None) -> Data:
    """Token-budget batches (`data.max_tokens` per side, `lmjax.data.TokenBudgetPairs`) of the training pairs, and
    of the validation (or, for split "test", test2016) pairs in order for evaluation. The joint BPE is fitted on
    train unless the run already saved one; the corpus travels to the task in `info`."""
    from lmjax.data import TokenBudgetPairs
    from lmjax.data.translation import parallel_corpus

    d, cfg = run_cfg.data, run_cfg.model
    if d.max_tokens <= 0:
        raise ConfigError("the transformer translate task batches by tokens: set data.max_tokens > 0 "
                          "(e.g. --set data.max_tokens=4096)")
    if run_cfg.train.steps_per_call > 1 or run_cfg.optim.grad_accum > 1:
        raise ConfigError("token-budget batches differ in shape, so they cannot be stacked: keep "
                          "train.steps_per_call=1 and optim.grad_accum=1 (raise data.max_tokens instead)")
    corpus = parallel_corpus(d, d.src_lang, d.tgt_lang, tokenizer=tokenizer)
    tok = corpus.tokenizer
    # Rows come in multiples of 8 and of the devices the batch is split over (data x fsdp; -1 = all of them).
    mesh = run_cfg.mesh
    batch_devices = (jax.device_count() // (mesh.fsdp * mesh.tensor) if mesh.data == -1 else mesh.data) * mesh.fsdp
    kw = dict(pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id, max_len=cfg.max_len,
              row_multiple=math.lcm(8, max(batch_devices, 1)))

    def train(process_index: int, process_count: int):
        pairs = corpus.splits["train"][:d.max_examples or None]
        return TokenBudgetPairs(pairs, d.max_tokens, seed=d.seed, process_index=process_index,
                                process_count=process_count, **kw)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        pairs = corpus.splits[_test_split(split)]
        batches = TokenBudgetPairs(pairs, d.max_tokens, shuffle=False, num_epochs=1, process_index=process_index,
                                   process_count=process_count, **kw)
        return itertools.islice(batches, eval_limit(run_cfg, max_batches))

    return Data(tokenizer=tok, vocab_size=tok.vocab_size, train=train, eval=evaluate, info={"corpus": corpus})


def _test_split(split: str) -> str:
    return "test2016" if split == "test" else split


@register_task("transformer", "translate", data=make_data,
               description="label-smoothed teacher-forced translation, BLEU of greedy decoding in evaluation")
def make_task(run_cfg: RunConfig, data: Data) -> Task:
    """Label-smoothed cross entropy summed over the target tokens (eos included, padding not), with the plain NLL
    as aux (`eval_nll`; perplexity exp(eval_nll)); tokens/s counts real target tokens. Evaluation adds BLEU of
    greedy translations of the split (`model.eval_bleu`)."""
    model = model_from_config(run_cfg, data.vocab_size)
    cfg = model.config
    rows = 8
    example = {"src": jax.ShapeDtypeStruct((rows, 8), jnp.int32), "src_mask": jax.ShapeDtypeStruct((rows, 8), bool),
               **{k: jax.ShapeDtypeStruct((rows, 8), jnp.int32) for k in ("tgt_in", "tgt_out")},
               "tgt_mask": jax.ShapeDtypeStruct((rows, 8), bool)}

    def init_fn(rng, batch):
        return model.init(rng, batch["src"], batch["src_mask"], batch["tgt_in"], batch["tgt_mask"])

    def loss_fn(params, batch, rng, train):
        rngs = {"dropout": rng} if rng is not None else {}
        logits = model.apply({"params": params}, batch["src"], batch["src_mask"], batch["tgt_in"], batch["tgt_mask"],
                             train=train, rngs=rngs)[..., :cfg.vocab_size]  # smoothing over the real vocabulary
        loss, count = token_cross_entropy(logits, batch["tgt_out"], batch["tgt_mask"],
                                          label_smoothing=cfg.label_smoothing)
        nll, _ = token_cross_entropy(logits, batch["tgt_out"], batch["tgt_mask"])
        return loss, count, {"nll": nll}

    def corpus_metrics(engine, params, split="validation"):
        if not cfg.eval_bleu:
            return {}
        pairs = data.info["corpus"].text[_test_split(split)][:cfg.eval_sentences or None]
        hyps = translate(model, params, data.tokenizer, [s for s, _ in pairs])
        return {"bleu": bleu(hyps, [t for _, t in pairs]).score}

    # Training FLOPs per target token: 6 x the matmul parameters a target token passes through, taking the source
    # tokens as about as many (Multi30k: 13.9 de vs 13.7 en BPE tokens per sentence); attention adds little here.
    d, f = cfg.d_model, cfg.d_ff
    enc = cfg.enc_layers * (4 * d * d + 2 * d * f)
    dec = cfg.dec_layers * (8 * d * d + 2 * d * f)
    flops = 6 * (enc + dec + padded_size(cfg.vocab_size) * d)
    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn, flops_per_token=flops,
                corpus_metrics=corpus_metrics, count_tokens=True)


# --------------------------------------------------------------------------------------------------------- presets


def _run(name: str, model: TransformerConfig, *, max_tokens: int, lr: float, warmup: int, steps: int,
         eval_every: int, vocab: int = 10000, clip: float = 0.0, weight_decay: float = 0.0) -> RunConfig:
    return RunConfig(
        name=name, task="translate", model=model,
        data=DataConfig(dataset="multi30k/tok", tokenizer="bpe", vocab_size=vocab, max_tokens=max_tokens,
                        batch_size=8),
        optim=OptimConfig(name="adamw", lr=lr, schedule="inverse_sqrt", warmup_steps=warmup, b1=0.9, b2=0.98,
                          eps=1e-9, weight_decay=weight_decay, clip_norm=clip),
        train=TrainConfig(steps=steps, eval_every=eval_every, eval_batches=0, log_every=50,
                          checkpoint_every=eval_every, keep_checkpoints=10, best_metric="eval_bleu",
                          sample_tokens=0),
    )


@register_preset("transformer_base", "Vaswani et al.'s base Transformer (65M-class; 6+6 layers, d=512) on Multi30k")
def transformer_base() -> RunConfig:
    """The paper's base sizes and recipe: d=512, 8 heads, d_ff=2048, 6+6 layers, dropout 0.1, label smoothing 0.1,
    Adam (0.9, 0.98, 1e-9) with lr = d^-0.5 min(step^-0.5, step warmup^-1.5), warmup 4000, ~25k tokens per batch
    side; for accelerators."""
    return _run("transformer_base", TransformerConfig(), max_tokens=25000, lr=512 ** -0.5 * 4000 ** -0.5,
                warmup=4000, steps=100_000, eval_every=2000)


@register_preset("transformer_big", "Vaswani et al.'s big Transformer (6+6 layers, d=1024, 16 heads) on Multi30k")
def transformer_big() -> RunConfig:
    return _run("transformer_big", TransformerConfig(d_model=1024, num_heads=16, d_ff=4096, dropout=0.3),
                max_tokens=25000, lr=1024 ** -0.5 * 4000 ** -0.5, warmup=4000, steps=300_000, eval_every=5000)


@register_preset("multi30k_transformer", "de->en Transformer sized for a 2-core CPU (3+3 layers, d=256; Multi30k)")
def multi30k_transformer() -> RunConfig:
    """A small post-LN Transformer for Multi30k de->en: d=256, 4 heads, d_ff=1024, 3+3 layers, one tied 10k joint
    BPE table; dropout 0.3 (residuals and embeddings) and 0.1 on the attention weights, none on the feed-forward
    activations (the largest masks: on this CPU their random bits cost more than the step's matmuls), label
    smoothing 0.1; Adam (0.9, 0.98) at 1e-3 after 1,000 warm-up steps, then inverse square root; 2,048 tokens per
    batch side (about 290 batches an epoch, 9,000 steps about 31 epochs); BLEU of greedy validation translations
    picks the best checkpoint."""
    model = TransformerConfig(d_model=256, num_heads=4, d_ff=1024, enc_layers=3, dec_layers=3, dropout=0.3,
                              attention_dropout=0.1, max_len=128)
    return _run("multi30k_transformer", model, max_tokens=2048, lr=1e-3, warmup=1000, steps=9000, eval_every=500,
                weight_decay=0.0001)


@register_preset("transformer_smoke", "a tiny Transformer for smoke tests (2+2 layers, d=32; Multi30k)")
def transformer_smoke() -> RunConfig:
    model = TransformerConfig(d_model=32, num_heads=2, d_ff=64, enc_layers=2, dec_layers=2, max_len=64,
                              decode_extra=8, eval_sentences=64)
    cfg = _run("transformer_smoke", model, max_tokens=512, lr=1e-3, warmup=10, steps=8, eval_every=8, vocab=500)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_examples=512),
                               train=dataclasses.replace(cfg.train, log_every=4, eval_batches=2))
