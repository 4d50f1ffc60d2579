"""RNN encoder-decoder translation (Cho et al., 2014; Sutskever et al., 2014) with attention (Bahdanau et al., 2015;
Luong et al., 2015).

    h_j = [GRU_fwd(x)_j ; GRU_bwd(x)_j]                         bidirectional GRU encoder over source embeddings
    s_0 = tanh(W_b [h_fwd_last ; h_bwd_first] + b_b)             bridge to the decoder's first state
    c_t = Σ_j α_tj h_j,  α_t = softmax_j(score(s_{t-1}, h_j))   attention context (masked to the source length)
    s_t = GRU([E y_{t-1} ; c_t], s_{t-1})                       decoder
    p(y_t | y_<t, x) = softmax(W_o [s_t ; c_t ; E y_{t-1}] + b_o)

score: "additive" (Bahdanau) v^T tanh(W_s s + W_h h_j); "multiplicative" (Luong's general) s^T W h_j; "none" has no
attention: c_t = [h_fwd_last ; h_bwd_first] at every step, the whole source squeezed into one vector. Training uses
teacher forcing (the decoder reads the reference y_{t-1}); decoding is greedy or beam search
(`lmjax.ops.sampling.beam_search`). Dropout acts on the embeddings. An empty source gives a zero context (every
score masked), never NaN. Batches come from `lmjax.data.BucketedPairs` (src, src_mask, tgt_in, tgt_out, tgt_mask).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, check_ranges, register_preset
from lmjax.layers import cell_params, embedding, lookup, param, uniform
from lmjax.ops import recurrent
from lmjax.ops.losses import token_cross_entropy
from lmjax.ops.sampling import beam_search, cut_at_eos  # noqa: F401 - cut_at_eos re-exported for callers
from lmjax.train.task import Data, Task, register_task

ATTENTION = ("none", "additive", "multiplicative")
_MASKED = -1e9  # finite: a source with no tokens gets uniform weights over zero outputs, i.e. a zero context


@dataclass(frozen=True)
class Seq2SeqConfig:
    family: ClassVar[str] = "seq2seq"
    src_vocab_size: int = 0  # 0 = take it from the tokenizers
    tgt_vocab_size: int = 0
    embed: int = 256
    hidden: int = 512  # decoder width; each encoder direction has it too
    attention: str = "additive"  # one of ATTENTION
    attention_dim: int = 512  # additive attention's hidden width
    readout: int = 0  # 0: logits from [s; c; y] directly; > 0: Bahdanau's maxout readout of this width first
    dropout: float = 0.3
    init_scale: float = 0.08  # every parameter ~ U(-s, s), as Sutskever et al.
    min_freq: int = 2  # words seen fewer times in training become <unk>
    max_len: int = 50  # longest generated translation

    def validate(self) -> None:
        """Ranges a run config is checked against when it is built; `check_config` checks the vocabulary sizes when
        the model is."""
        check_ranges("model", self, (
            ("src_vocab_size", self.src_vocab_size >= 0, ">= 0 (0 = the tokenizer's size)"),
            ("tgt_vocab_size", self.tgt_vocab_size >= 0, ">= 0 (0 = the tokenizer's size)"),
            ("embed", self.embed >= 1, ">= 1"),
            ("hidden", self.hidden >= 1, ">= 1"),
            ("attention", self.attention in ATTENTION, f"one of {', '.join(ATTENTION)}"),
            ("attention_dim", self.attention_dim >= 1, ">= 1"),
            ("readout", self.readout >= 0, ">= 0 (0 = no readout layer)"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("init_scale", self.init_scale > 0, "> 0"),
            ("min_freq", self.min_freq >= 1, ">= 1"),
            ("max_len", self.max_len >= 1, ">= 1"),
        ))


def check_config(cfg: Seq2SeqConfig) -> None:
    if cfg.attention not in ATTENTION:
        raise ConfigError(f"model.attention={cfg.attention!r} is unknown: choose one of {', '.join(ATTENTION)}")
    if cfg.src_vocab_size <= 0 or cfg.tgt_vocab_size <= 0:
        raise ConfigError("model.src_vocab_size and model.tgt_vocab_size must be > 0: build the model with "
                          "model_from_config(run_cfg, src_vocab, tgt_vocab) so it takes the tokenizers' sizes")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout={cfg.dropout} must be in [0, 1)")
    if cfg.readout < 0:
        raise ConfigError(f"model.readout={cfg.readout} must be >= 0 (0 = no readout layer)")


class Seq2Seq(nn.Module):
    """`__call__(src, src_mask, tgt_in, train)` -> logits [B, T, V_tgt] under teacher forcing; `encode` and
    `decode_step` are the pieces generation uses.

    Parameters sit flat on the module, all ~ U(-init_scale, init_scale): src_embed, tgt_embed; the GRUs' torch-layout
    enc_fwd_*, enc_bwd_*, dec_* {w_ih, w_hh, b_ih, b_hh} (`lmjax.layers.cell_params`); bridge_*, attn_*, readout_*,
    out_*."""

    config: Seq2SeqConfig

    def setup(self):
        cfg = self.config
        e, h = cfg.embed, cfg.hidden
        self.src_embed = embedding(self, "src_embed", cfg.src_vocab_size, e, init=uniform(cfg.init_scale))
        self.tgt_embed = embedding(self, "tgt_embed", cfg.tgt_vocab_size, e, init=uniform(cfg.init_scale))
        self.enc_fwd = self._gru("enc_fwd", e)
        self.enc_bwd = self._gru("enc_bwd", e)
        self.bridge = (self._param("bridge_w", (h, 2 * h), ("hidden", "embed")),
                       self._param("bridge_b", (h,), ("hidden",)))
        if cfg.attention == "additive":
            self.attn = {"w_s": self._param("attn_w_s", (cfg.attention_dim, h), ("mlp", "embed")),
                         "w_h": self._param("attn_w_h", (cfg.attention_dim, 2 * h), ("mlp", "embed")),
                         "v": self._param("attn_v", (cfg.attention_dim,), ("mlp",))}
        elif cfg.attention == "multiplicative":
            self.attn = {"w": self._param("attn_w", (h, 2 * h), ("hidden", "embed"))}
        self.dec = self._gru("dec", e + 2 * h)
        if cfg.readout:  # t = maxout_2(W_r [s; c; y] + b_r): the 2*readout pre-activations pair up
            self.readout_w = self._param("readout_w", (2 * cfg.readout, h + 2 * h + e), ("mlp", "embed"))
            self.readout_b = self._param("readout_b", (2 * cfg.readout,), ("mlp",))
        self.out_w = self._param("out_w", (cfg.tgt_vocab_size, cfg.readout or h + 2 * h + e), ("vocab", "embed"))
        self.out_b = self._param("out_b", (cfg.tgt_vocab_size,), ("vocab",))
        self.drop = nn.Dropout(cfg.dropout)

    def _param(self, name, shape, axes):
        return param(self, name, shape, axes, uniform(self.config.init_scale))

    def _gru(self, prefix, input_size):
        cfg = self.config
        return cell_params(self, "gru", input_size, cfg.hidden, prefix=f"{prefix}_", init_scale=cfg.init_scale)

    def encode(self, src, src_mask, *, train: bool = False) -> dict[str, jax.Array]:
        """The decoder's initial state: s [B, H], the encoder outputs [B, S, 2H], their attention keys, the mask."""
        x = self.drop(lookup(self.src_embed, src), deterministic=not train)
        lengths = src_mask.sum(-1).astype(jnp.int32)
        zero = jnp.zeros((src.shape[0], self.config.hidden), jnp.float32)
        (last_fwd, first_bwd), outputs = recurrent.bidirectional(recurrent.gru_cell, self.enc_fwd, self.enc_bwd, x,
                                                                 zero, zero, lengths=lengths)
        summary = jnp.concatenate([last_fwd, first_bwd], -1)
        s = jnp.tanh(summary @ self.bridge[0].T + self.bridge[1])
        if self.config.attention == "additive":
            keys = outputs @ self.attn["w_h"].T  # W_h h_j once per sentence, not per decoder step
        elif self.config.attention == "multiplicative":
            keys = outputs @ self.attn["w"].T  # W h_j: scores are then s . key_j
        else:
            keys = summary[:, None, :]
        return {"s": s, "outputs": outputs, "keys": keys, "mask": src_mask}

    def _context(self, s, enc):
        """(c [B, 2H], α [B, S]) for decoder state s [B, H]."""
        cfg = self.config
        if cfg.attention == "none":
            return enc["keys"][:, 0], jnp.zeros(enc["mask"].shape, jnp.float32)
        if cfg.attention == "additive":
            scores = jnp.tanh(enc["keys"] + (s @ self.attn["w_s"].T)[:, None, :]) @ self.attn["v"]
        else:
            scores = jnp.einsum("bh,bsh->bs", s, enc["keys"])
        alpha = jax.nn.softmax(jnp.where(enc["mask"], scores, _MASKED), axis=-1)
        return jnp.einsum("bs,bsd->bd", alpha, enc["outputs"]), alpha

    def output(self, s, c, y, *, train: bool = False):
        """Logits [..., V] from the decoder state s, the context c and the embedded previous token y (deep output):
        W_o [s; c; y] + b_o, or with a readout W_o t + b_o, t_j = max(u_2j, u_2j+1), u = W_r [s; c; y] + b_r."""
        x = jnp.concatenate([s, c, y], -1)
        if self.config.readout:
            u = x @ self.readout_w.T + self.readout_b
            x = self.drop(u.reshape(*u.shape[:-1], self.config.readout, 2).max(-1), deterministic=not train)
        return x @ self.out_w.T + self.out_b

    def decode_step(self, enc, s, y):
        """One decoder step from state s [B, H] and embedded previous tokens y [B, E]: (logits [B, V], s, α [B, S])."""
        c, alpha = self._context(s, enc)
        s, _ = recurrent.gru_cell(self.dec, s, jnp.concatenate([y, c], -1))
        return self.output(s, c, y), s, alpha

    def embed_target(self, tokens, *, train: bool = False):
        # Dropout on all T embeddings at once, outside the time loop: each step gets its own mask.
        return self.drop(lookup(self.tgt_embed, tokens), deterministic=not train)

    def __call__(self, src, src_mask, tgt_in, *, train: bool = False):
        """Teacher forcing, as `decode_step` run T times, but only the context and the recurrence stay inside the
        loop: the embeddings' share of the GRU input projection and the vocabulary projection of all T steps are
        one matmul each outside it (the vocabulary projection dominates the FLOPs, and inside a scan its weight
        gradient would be accumulated step by step)."""
        enc = self.encode(src, src_mask, train=train)
        ys = self.embed_target(tgt_in, train=train)  # [B, T, E]
        e = ys.shape[-1]
        w_y, w_c = self.dec["w_ih"][:, :e], self.dec["w_ih"][:, e:]  # the GRU input is [y; c]
        gy = ys @ w_y.T + self.dec["b_ih"]  # [B, T, 3H]

        def step(s, gy_t):
            c, _ = self._context(s, enc)
            s, _ = recurrent.gru_cell.step(self.dec, s, gy_t + c @ w_c.T)
            return s, (s, c)

        _, (states, contexts) = jax.lax.scan(step, enc["s"], jnp.swapaxes(gy, 0, 1))
        return self.output(jnp.swapaxes(states, 0, 1), jnp.swapaxes(contexts, 0, 1), ys, train=train)


def init_variables(model: Seq2Seq, rng, batch: int = 2, length: int = 4):
    z = jnp.zeros((batch, length), jnp.int32)
    return model.init(rng, z, jnp.ones((batch, length), bool), z)


# ----------------------------------------------------------------------------------------------------- decoding


def greedy(model: Seq2Seq, params, src, src_mask, *, bos_id: int, max_len: int):
    """Greedy decoding: (tokens int32 [B, max_len], attention [B, max_len, S]); rows continue past eos (cut later)."""

    def run(mdl, src, src_mask):
        enc = mdl.encode(src, src_mask)

        def step(carry, _):
            s, token = carry
            logits, s, alpha = mdl.decode_step(enc, s, mdl.embed_target(token))
            token = jnp.argmax(logits, -1).astype(jnp.int32)
            return (s, token), (token, alpha)

        bos = jnp.full((src.shape[0],), bos_id, jnp.int32)
        _, (tokens, alphas) = jax.lax.scan(step, (enc["s"], bos), None, length=max_len)
        return tokens.T, jnp.swapaxes(alphas, 0, 1)

    return nn.apply(run, model)({"params": params}, src, src_mask)


def beam(model: Seq2Seq, params, src, src_mask, *, bos_id: int, eos_id: int, pad_id: int, max_len: int,
         beam_size: int = 5, length_penalty: float = 0.6):
    """Beam search: the best hypothesis per row, int32 [B, max_len], padded after eos."""

    def run(mdl, src, src_mask):
        enc = mdl.encode(src, src_mask)

        def step_fn(state, tokens):
            e, s = state
            logits, s, _ = mdl.decode_step(e, s, mdl.embed_target(tokens))
            return logits, (e, s)

        seqs, _ = beam_search(step_fn, (enc, enc["s"]), jnp.full((src.shape[0],), bos_id, jnp.int32),
                              beam_size=beam_size, max_len=max_len, eos_id=eos_id, length_penalty=length_penalty,
                              pad_id=pad_id)
        return seqs[:, 0]

    return nn.apply(run, model)({"params": params}, src, src_mask)


def pad_sources(ids: list[np.ndarray], pad_id: int, multiple: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Sources of any length (empty too) as (src, mask), padded to a multiple of `multiple` (few compiled shapes)."""
    lengths = np.array([len(x) for x in ids])
    width = -(-max(1, lengths.max(initial=0)) // multiple) * multiple
    src = np.full((len(ids), width), pad_id, np.int32)
    for row, x in enumerate(ids):
        src[row, :len(x)] = x
    return src, np.arange(width)[None, :] < lengths[:, None]


# ------------------------------------------------------------------------------------------------------ data, task


@dataclass(frozen=True)
class Corpus:
    src_tokenizer: Any
    tgt_tokenizer: Any
    splits: dict[str, list[tuple[np.ndarray, np.ndarray]]]  # (src ids, tgt ids) pairs
    text: dict[str, list[tuple[str, str]]]  # the same pairs as text


def load_corpus(data_cfg: DataConfig, min_freq: int, src_lang: str = "de", tgt_lang: str = "en") -> Corpus:
    """Multi30k (or any dataset with `src_lang`/`tgt_lang` text fields) with word vocabularies fitted on train."""
    from lmjax.data import load
    from lmjax.data.tokenizers import BOS, EOS, PAD, UNK, WordTokenizer

    text = {}
    for split in ("train", "validation", "test2016"):
        source = load(data_cfg.dataset, split, data_dir=data_cfg.data_dir or None)
        rows = source.__getitems__(list(range(len(source))))
        text[split] = [(r[src_lang].decode().strip(), r[tgt_lang].decode().strip()) for r in rows]
    specials = (PAD, UNK, BOS, EOS)  # pad id 0, as BucketedPairs pads with 0
    src_tok = WordTokenizer.fit([s for s, _ in text["train"]], min_freq=min_freq, specials=specials)
    tgt_tok = WordTokenizer.fit([t for _, t in text["train"]], min_freq=min_freq, specials=specials)
    splits = {k: [(src_tok.encode(s), tgt_tok.encode(t)) for s, t in v] for k, v in text.items()}
    return Corpus(src_tok, tgt_tok, splits, text)


def make_data(run_cfg: RunConfig, tokenizer=None) -> Data:
    """Length-bucketed training pairs, and the validation (or test2016) pairs in order for evaluation. The word
    vocabularies are fitted on train every time (deterministically, so a saved tokenizer is not needed); the corpus
    travels to the task in `info`."""
    from lmjax.data import BucketedPairs

    corpus = load_corpus(run_cfg.data, run_cfg.model.min_freq)
    tok, d = corpus.tgt_tokenizer, run_cfg.data
    kw = dict(pad_id=tok.pad_id, bos_id=tok.bos_id, eos_id=tok.eos_id)

    def train(process_index: int, process_count: int):
        return BucketedPairs(corpus.splits["train"], d.batch_size, seed=d.seed, drop_remainder=True,
                             process_index=process_index, process_count=process_count, **kw)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        pairs = corpus.splits["test2016" if split == "test" else "validation"]
        return BucketedPairs(pairs, d.eval_batch_size or d.batch_size, shuffle=False, num_epochs=1,
                             process_index=process_index, process_count=process_count, **kw)

    target_tokens = sum(len(t) + 1 for _, t in corpus.splits["train"]) / len(corpus.splits["train"])  # + eos
    return Data(tokenizer=tok, vocab_size=tok.vocab_size, train=train, eval=evaluate,
                info={"corpus": corpus, "src_vocab_size": corpus.src_tokenizer.vocab_size,
                      "tokens_per_example": target_tokens})


def model_from_config(run_cfg: RunConfig, src_vocab: int, tgt_vocab: int) -> Seq2Seq:
    cfg: Seq2SeqConfig = run_cfg.model
    cfg = dataclasses.replace(cfg, src_vocab_size=cfg.src_vocab_size or src_vocab,
                              tgt_vocab_size=cfg.tgt_vocab_size or tgt_vocab)
    check_config(cfg)
    return Seq2Seq(cfg)


@register_task("seq2seq", "translate", data=make_data, description="teacher-forced translation (source -> target)")
def make_task(run_cfg: RunConfig, data: Data) -> Task:
    """Teacher-forced next-token cross entropy (sum, count) over the target tokens (eos included, padding not);
    tokens/s counts target tokens (their mean per pair over the training split)."""
    model = model_from_config(run_cfg, data.info["src_vocab_size"], data.vocab_size)
    b = run_cfg.data.batch_size
    example = {"src": jax.ShapeDtypeStruct((b, 8), jnp.int32), "src_mask": jax.ShapeDtypeStruct((b, 8), bool),
               **{k: jax.ShapeDtypeStruct((b, 8), jnp.int32) for k in ("tgt_in", "tgt_out")},
               "tgt_mask": jax.ShapeDtypeStruct((b, 8), bool)}

    def init_fn(rng, batch):
        return model.init(rng, batch["src"], batch["src_mask"], batch["tgt_in"])

    def loss_fn(params, batch, rng, train):
        rngs = {"dropout": rng} if rng is not None else {}
        logits = model.apply({"params": params}, batch["src"], batch["src_mask"], batch["tgt_in"], train=train,
                             rngs=rngs)
        loss_sum, count = token_cross_entropy(logits, batch["tgt_out"], batch["tgt_mask"])
        return loss_sum, count, {}

    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn,
                tokens_per_example=data.info.get("tokens_per_example", 1.0))


# --------------------------------------------------------------------------------------------------------- presets


def _multi30k(name: str, attention: str) -> RunConfig:
    """A 2-core-CPU-sized Bahdanau et al. model on the lowercased, tokenised Multi30k ("multi30k/tok"): embeddings,
    GRUs and attention 256 wide, a 256-unit maxout readout before the softmax (as in the paper; the PyTorch
    tutorials' 512-wide GRUs and direct [s; c; y] projection cost 3x the FLOPs per step), dropout 0.5, Adam 1e-3,
    clip 1, batch 128, 8 epochs (226 steps each)."""
    return RunConfig(
        name=name,
        task="translate",
        model=Seq2SeqConfig(attention=attention, embed=256, hidden=256, attention_dim=256, readout=256, dropout=0.5),
        data=DataConfig(dataset="multi30k/tok", batch_size=128),
        optim=OptimConfig(name="adamw", lr=1e-3, weight_decay=0.0, schedule="constant", clip_norm=1.0),
        train=TrainConfig(steps=1808, eval_every=226, eval_batches=100, log_every=20, checkpoint_every=226,
                          sample_tokens=0),
    )


@register_preset("multi30k_additive", "de->en bi-GRU encoder, GRU decoder, Bahdanau attention (Multi30k)")
def multi30k_additive() -> RunConfig:
    return _multi30k("multi30k_additive", "additive")


@register_preset("multi30k_multiplicative", "de->en bi-GRU encoder, GRU decoder, Luong attention (Multi30k)")
def multi30k_multiplicative() -> RunConfig:
    return _multi30k("multi30k_multiplicative", "multiplicative")


@register_preset("multi30k_no_attention", "de->en bi-GRU encoder, GRU decoder, no attention (Multi30k)")
def multi30k_no_attention() -> RunConfig:
    return _multi30k("multi30k_no_attention", "none")
