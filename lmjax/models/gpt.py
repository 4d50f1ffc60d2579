"""GPT: a decoder-only Transformer language model (Radford et al., 2018; 2019), as in nanoGPT.

    h_0 = W_te[x] + W_pe[pos]                                      token + learned position embeddings
    h_l = h_{l-1} + Attn(LN(h_{l-1})),  h_l += MLP(LN(h_l))        pre-LayerNorm blocks, l = 1..L
    logits = LN(h_L) W_te^T                                        output projection tied to the input embedding

Attn is causal multi-head attention with one fused Q/K/V projection; MLP is Linear(C, 4C) -> GELU -> Linear(4C, C);
the blocks, embeddings and LayerNorms are `lmjax.layers`' (`block` below sets a TransformerBlock up as GPT's).
Residual projections start at std 0.02/sqrt(2L) so the residual stream's variance does not grow with depth. Dropout
acts on the embeddings and on each residual branch; not on the attention probabilities, which
`ops.dot_product_attention` keeps inside.

Every parameter carries logical axis names (`config.DEFAULT_RULES` maps them onto the mesh). Parameters are fp32;
matmuls run in the compute `dtype`; the residual stream, LayerNorms, softmax and loss stay fp32. The vocabulary is
padded to a multiple of 128 for matmul-friendly shapes, and the padded logits are -inf.

Generation keeps a fixed-size K/V cache [B, block_size, H, D] per layer, prefills the prompts and decodes one token
at a time inside a jit-compiled `lax.while_loop`.

Fine-tuning as in GPT-1 (Radford et al., 2018, sec. 3.2): `GPTClassifier` puts a linear head on LN(h_L) at each
sequence's last real token, and its task minimises L = L_cls + lambda L_lm (an auxiliary next-token loss on the same
inputs). The file ends with the presets, `shakespeare_char` first.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from lmjax.config import (ConfigError, DataConfig, OptimConfig, RunConfig, TrainConfig, check_ranges, register_preset,
                          with_vocab_size)
from lmjax.layers import (VOCAB_MULTIPLE, LayerNorm, Linear, TransformerBlock, attend, embedding, init_kv_cache,
                          lookup, mask_padded_vocab, padded_size)
from lmjax.ops.losses import token_cross_entropy
from lmjax.ops.sampling import check_sampling, sample_logits
from lmjax.data.classification import sentence_data
from lmjax.data.pipeline import document_lm_data, lm_data
from lmjax.train.task import Data, Task, register_task

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclass(frozen=True)
class GPTConfig:
    family: ClassVar[str] = "gpt"
    vocab_size: int = 0  # 0 = take it from the tokenizer
    block_size: int = 256  # maximum sequence length (rows of the position table)
    n_layer: int = 6
    n_head: int = 6
    n_embd: int = 384
    dropout: float = 0.0
    bias: bool = True  # biases in the Linears and LayerNorms
    tie_embeddings: bool = True
    mlp_ratio: int = 4
    gelu_approximate: bool = False  # exact erf GELU like nanoGPT; GPT-2 itself used the tanh approximation
    attention: str = "auto"  # `implementation` of ops.dot_product_attention
    layer_norm_eps: float = 1e-5
    aux_lm_weight: float = 0.0  # classify task: lambda of GPT-1's L = L_cls + lambda L_lm

    def validate(self) -> None:
        """Ranges a run config is checked against when it is built; `check_config` checks the vocabulary size and
        data.seq_len when the model is."""
        check_ranges("model", self, (
            ("vocab_size", self.vocab_size >= 0, ">= 0 (0 = the tokenizer's size)"),
            ("block_size", self.block_size >= 1, ">= 1"),
            ("n_layer", self.n_layer >= 1, ">= 1"),
            ("n_head", self.n_head >= 1, ">= 1"),
            ("n_embd", self.n_embd >= 1 and self.n_embd % max(self.n_head, 1) == 0,
             f"a positive multiple of model.n_head={self.n_head}"),
            ("mlp_ratio", self.mlp_ratio >= 1, ">= 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("attention", self.attention in ("auto", "xla", "jax"), "one of auto, xla, jax"),
            ("layer_norm_eps", self.layer_norm_eps > 0, "> 0"),
            ("aux_lm_weight", self.aux_lm_weight >= 0, ">= 0"),
        ))

    @property
    def padded_vocab_size(self) -> int:
        return padded_size(self.vocab_size, VOCAB_MULTIPLE)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


def check_config(cfg: GPTConfig, seq_len: int | None = None) -> None:
    """Raise a one-line `ConfigError` that names the fix for the first problem found."""
    if cfg.vocab_size <= 0:
        raise ConfigError(f"model.vocab_size={cfg.vocab_size}: build the model with model_from_config(run_cfg, "
                          f"vocab_size) so it takes the tokenizer's size, or set model.vocab_size > 0")
    if cfg.n_embd % cfg.n_head:
        raise ConfigError(f"model.n_embd={cfg.n_embd} is not divisible by model.n_head={cfg.n_head}: "
                          f"choose n_embd a multiple of n_head")
    if seq_len is not None and seq_len > cfg.block_size:
        raise ConfigError(f"data.seq_len={seq_len} exceeds model.block_size={cfg.block_size}: "
                          f"lower data.seq_len or raise model.block_size")


# --------------------------------------------------------------------------------------------------------- layers


def block(cfg: GPTConfig, dtype: Any, name: str) -> TransformerBlock:
    """A pre-LN causal `TransformerBlock`: attn/c_attn [3, H, D, C], attn/c_proj, ln_1, ln_2, mlp/c_fc, mlp/c_proj,
    the residual projections (the c_proj kernels) starting at std 0.02/sqrt(2L), dropout on both residual branches."""
    return TransformerBlock(
        num_heads=cfg.n_head, features=cfg.n_embd, mlp_hidden=cfg.mlp_ratio * cfg.n_embd, norm="pre", causal=True,
        dropout=cfg.dropout, activation="gelu_tanh" if cfg.gelu_approximate else "gelu", use_bias=cfg.bias,
        epsilon=cfg.layer_norm_eps, out_std=0.02 / (2 * cfg.n_layer) ** 0.5, implementation=cfg.attention,
        dtype=dtype, name=name)


# ---------------------------------------------------------------------------------------------------------- model


class GPT(nn.Module):
    """tokens int [B, T] -> logits fp32 [B, T, padded_vocab_size], columns >= vocab_size at -inf.

    positions: int [B, T] (default 0..T-1 in every row); they index the position table and, with a cache, are the
    cache slots the tokens occupy (consecutive within a row). cache: from `init_cache`; then the call returns
    (logits, new_cache) and query t of row b sees the slots <= positions[b, t]. train=True enables dropout (needs
    rngs={"dropout": key}). outputs (without a cache): "logits"; "hidden", the final hidden states LN_f(h_L) fp32
    [B, T, n_embd] that task heads read (no output projection is computed); or "both", (logits, hidden).
    """

    config: GPTConfig
    dtype: Any = jnp.float32  # compute dtype of the matmuls

    @nn.compact
    def __call__(self, tokens, *, train: bool = False, positions=None, cache=None, outputs: str = "logits"):
        cfg = self.config
        check_config(cfg)
        if outputs not in ("logits", "hidden", "both") or (cache is not None and outputs != "logits"):
            raise ValueError(f"outputs={outputs!r}: use 'logits', 'hidden' or 'both' ('logits' with a cache)")
        batch, length = tokens.shape
        if length > cfg.block_size:
            raise ValueError(f"sequence of length {length} is longer than model.block_size={cfg.block_size}: "
                             f"crop it to the last {cfg.block_size} tokens or use a model with a larger block_size")
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))

        wte = embedding(self, "wte", cfg.padded_vocab_size, cfg.n_embd, axes=("vocab", "embed"))
        wpe = embedding(self, "wpe", cfg.block_size, cfg.n_embd, axes=("positions", "embed"))
        x = nn.Dropout(cfg.dropout)(lookup(wte, tokens, "vocab") + lookup(wpe, positions, "positions"),
                                    deterministic=not train)
        x = nn.with_logical_constraint(x, ("batch", "length", "embed"))

        # With a cache, the tokens of row b go into slots positions[b, 0] onward and query t sees slots <= its own.
        write_start = None if cache is None else positions[:, 0]
        new_cache = []
        for i in range(cfg.n_layer):
            out = block(cfg, self.dtype, f"h_{i}")(x, cache=None if cache is None else cache[i],
                                                    cache_index=write_start, train=train)
            x = out if cache is None else out[0]
            new_cache.append(None if cache is None else out[1])
        hidden = LayerNorm(cfg.layer_norm_eps, cfg.bias, name="ln_f")(x)
        if outputs == "hidden":
            return hidden

        if cfg.tie_embeddings:
            logits = attend(wte, hidden, self.dtype)
        else:
            logits = Linear((cfg.padded_vocab_size,), ("vocab", "embed"), use_bias=False, dtype=self.dtype,
                            name="lm_head")(hidden)
        logits = nn.with_logical_constraint(mask_padded_vocab(logits, cfg.vocab_size), ("batch", "length", "vocab"))
        if outputs == "both":
            return logits, hidden
        return logits if cache is None else (logits, tuple(new_cache))


class GPTClassifier(nn.Module):
    """GPT-1's fine-tuning model: tokens int [B, T] and lengths int [B] -> class logits fp32 [B, num_classes].

    The head is one Linear on the trunk's final hidden state LN_f(h_L) at each row's last real token, column
    lengths[b] - 1 (GPT-1 ends every input with an extract token and reads it there). Attention is causal, so that
    state has seen the whole row and nothing after it: right padding, and whatever it holds, never changes the
    logits. The trunk is the `GPT` module itself, named "gpt": a pretrained GPT's params are params["gpt"]. With
    lm=True the call returns (class logits, the trunk's LM logits [B, T, padded_vocab_size]) for the auxiliary loss.
    Dropout (config.dropout) also acts on the head's input, as in GPT-1.
    """

    config: GPTConfig
    num_classes: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, lengths, *, train: bool = False, lm: bool = False):
        out = GPT(self.config, self.dtype, name="gpt")(tokens, train=train, outputs="both" if lm else "hidden")
        lm_logits, hidden = out if lm else (None, out)
        last = jnp.clip(lengths - 1, 0, tokens.shape[1] - 1)
        features = jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]  # [B, C]
        features = nn.Dropout(self.config.dropout)(features, deterministic=not train)
        logits = Linear((self.num_classes,), ("classes", "embed"), dtype=self.dtype, name="head")(features)
        logits = nn.with_logical_constraint(logits.astype(jnp.float32), ("batch", "classes"))
        return (logits, lm_logits) if lm else logits


def init_cache(cfg: GPTConfig, batch: int, dtype: Any = jnp.float32) -> tuple[dict[str, jax.Array], ...]:
    """An empty K/V cache: one {"k", "v"} of zeros [batch, block_size, n_head, head_dim] per layer."""
    return tuple(init_kv_cache(batch, cfg.block_size, cfg.n_head, cfg.head_dim, dtype) for _ in range(cfg.n_layer))


def count_params(params) -> int:
    """Number of scalars in a (possibly boxed or abstract) parameter tree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(nn.meta.unbox(params)))


# ----------------------------------------------------------------------------------------------------- generation


def generate(
    model: GPT,
    params,
    prompt_ids: jax.Array,
    *,
    max_new_tokens: int,
    prompt_lengths: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    rng: jax.Array | None = None,
) -> jax.Array:
    """Sample continuations of a batch of prompts: int32 [B, P + max_new_tokens].

    prompt_ids: int [B, P], RIGHT-padded; prompt_lengths: int [B] in 1..P (default: all P). Row b's continuation
    starts at column prompt_lengths[b], so out[b, :prompt_lengths[b] + n] is its prompt and its n new tokens; the
    columns after a row's end hold eos_id (or 0 without one). Sampling: ops.sample_logits (temperature 0 = greedy,
    top_k 0 and top_p 1 = off), token n of the run drawn with fold_in(rng, n). A row stops after emitting eos_id;
    the loop stops when every row has, or after max_new_tokens.

    While a row fits in block_size, each new token costs one cached decode step; beyond it, generation slides a
    block_size window (nanoGPT's crop), recomputing it for each token. One compilation per (model, shapes,
    max_new_tokens, temperature, top_k, top_p); prompt_lengths, eos_id and rng are traced.
    """
    batch, prompt_len = prompt_ids.shape
    if prompt_len < 1 or max_new_tokens < 1:
        raise ValueError(f"generate needs prompts of at least one token and max_new_tokens >= 1, got prompts of "
                         f"length {prompt_len} and max_new_tokens={max_new_tokens}")
    check_sampling(temperature, top_k, top_p)
    if prompt_len > model.config.block_size:
        raise ValueError(f"prompts of length {prompt_len} are longer than model.block_size={model.config.block_size}:"
                         f" keep their last {model.config.block_size} tokens")
    if rng is None:
        if temperature != 0:
            raise ValueError("generate needs rng=jax.random.key(...) unless temperature=0 (greedy)")
        rng = jax.random.key(0)
    lengths = jnp.full((batch,), prompt_len) if prompt_lengths is None else prompt_lengths
    eos = -1 if eos_id is None else eos_id  # -1 matches no token
    return _generate(model, params, jnp.asarray(prompt_ids, jnp.int32), jnp.asarray(lengths, jnp.int32),
                     jnp.int32(eos), rng, max_new_tokens=max_new_tokens, temperature=float(temperature),
                     top_k=int(top_k), top_p=float(top_p))


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "top_k", "top_p"))
def _generate(model, params, prompt_ids, lengths, eos_id, rng, *, max_new_tokens, temperature, top_k, top_p):
    """The compiled body of `generate`: prefill, a cached decode loop, then (if needed) a sliding-window loop."""
    cfg = model.config
    batch, prompt_len = prompt_ids.shape
    rows = jnp.arange(batch)
    fill = jnp.maximum(eos_id, 0)
    tokens = jnp.pad(prompt_ids, ((0, 0), (0, max_new_tokens)))
    tokens = jnp.where(jnp.arange(tokens.shape[1]) < lengths[:, None], tokens, fill)
    apply = functools.partial(model.apply, {"params": params})

    def emit(state, logits):
        """Sample token n of every row from logits [B, V] and write it at column lengths + n."""
        n, tokens, done, cache = state
        tok = sample_logits(jax.random.fold_in(rng, n), logits[:, : cfg.vocab_size],
                            temperature=temperature, top_k=top_k, top_p=top_p)
        tok = jnp.where(done, fill, tok)
        return n + 1, tokens.at[rows, lengths + n].set(tok), done | (tok == eos_id), cache

    def running(limit):
        return lambda state: (state[0] < limit) & ~jnp.all(state[2])

    def cached_step(state):
        n, tokens, done, cache = state
        pos = (lengths + n - 1)[:, None]  # the last token's position: it goes into the cache, its logits are read
        logits, cache = apply(tokens[rows[:, None], pos], positions=pos, cache=cache)
        return emit((n, tokens, done, cache), logits[:, 0])

    def window_step(state):
        n, tokens = state[:2]
        end = lengths + n
        start = jnp.maximum(end - cfg.block_size, 0)
        window = jax.vmap(lambda row, s: lax.dynamic_slice_in_dim(row, s, cfg.block_size))(tokens, start)
        return emit(state, apply(window)[rows, end - 1 - start])

    logits, cache = apply(tokens[:, :prompt_len], cache=init_cache(cfg, batch, model.dtype))
    state = emit((jnp.int32(0), tokens, jnp.zeros((batch,), bool), cache), logits[rows, lengths - 1])
    # Token n is read off position lengths + n - 1, which must be a cache slot: n <= block_size - P.
    state = lax.while_loop(running(min(max_new_tokens, cfg.block_size - prompt_len + 1)), cached_step, state)
    if prompt_len + max_new_tokens > cfg.block_size:
        state = lax.while_loop(running(max_new_tokens), window_step, state)
    return state[1]


# ------------------------------------------------------------------------------------------------- engine contract


def model_from_config(run_cfg: RunConfig, vocab_size: int) -> GPT:
    """The GPT of `run_cfg` for a tokenizer of `vocab_size` ids, in the compute dtype of `run_cfg.train.dtype`."""
    cfg: GPTConfig = with_vocab_size(run_cfg.model, vocab_size)
    check_config(cfg, run_cfg.data.seq_len)
    if run_cfg.train.dtype not in DTYPES:
        raise ConfigError(f"train.dtype={run_cfg.train.dtype!r} is unknown: choose one of {', '.join(DTYPES)}")
    return GPT(cfg, dtype=DTYPES[run_cfg.train.dtype])


@register_task("gpt", "lm", data=lm_data, description="next-token prediction on a text stream")
@register_task("gpt", "doc_lm", data=document_lm_data,
               description="next-token prediction on documents, each preceded by [SEP] (GPT-1 pretraining)")
def make_task(run_cfg: RunConfig, data: Data) -> Task:
    """The engine's view of a GPT: next-token cross entropy (sum, count) and nanoGPT's FLOP estimate."""
    model = model_from_config(run_cfg, data.vocab_size)
    cfg = model.config
    batch, seq_len = run_cfg.data.batch_size, run_cfg.data.seq_len
    example = {k: jax.ShapeDtypeStruct((batch, seq_len), jnp.int32) for k in ("inputs", "targets")}

    def loss_fn(params, batch, rng, train):
        rngs = {"dropout": rng} if rng is not None else {}
        logits = model.apply({"params": params}, batch["inputs"], train=train, rngs=rngs)
        # Only the real vocabulary: label smoothing must not spread mass over padding columns.
        loss_sum, count = token_cross_entropy(logits[..., : cfg.vocab_size], batch["targets"], batch.get("mask"))
        return loss_sum, count, {}

    # nanoGPT's estimate_mfu: 6N per token for the weight matmuls (position table excluded: it is a lookup, as is
    # the input table when untied) plus 12 L C T for attention scores and values, forward and backward.
    params = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), example["inputs"]))["params"]
    lookups = params["wpe"].size + (0 if cfg.tie_embeddings else params["wte"].size)
    flops = 6 * (count_params(params) - lookups) + 12 * cfg.n_layer * cfg.n_embd * seq_len

    def sample_fn(params, tokenizer, prompt: str, max_new_tokens: int, rng, *, temperature: float = 0.8,
                  top_k: int = 200, top_p: float = 1.0) -> str:
        """The prompt and its continuation as text (defaults: nanoGPT's sample.py); the prompt's last block_size
        tokens are the context."""
        ids = list(tokenizer.encode(prompt))[-cfg.block_size:]
        if not ids:
            raise ValueError(f"the sample prompt {prompt!r} encodes to no tokens: give at least one character")
        out = generate(model, params, jnp.asarray([ids], jnp.int32), max_new_tokens=max_new_tokens,
                       temperature=temperature, top_k=min(top_k, cfg.vocab_size), top_p=top_p, rng=rng)
        return tokenizer.decode([int(t) for t in out[0]])

    return Task(model=model, loss_fn=loss_fn, example_batch=example, flops_per_token=float(flops),
                tokens_per_example=seq_len, sample_fn=sample_fn)


# The classifier's trunk: `optim.freeze=^gpt/` trains the head alone.
FREEZE_TRUNK = ("^gpt/",)


@register_task("gpt", "classify", data=sentence_data,
               description="sentence classification, GPT-1 style: a linear head on the last token (+ aux LM loss)")
def make_classifier_task(run_cfg: RunConfig, data: Data) -> Task:
    """Fine-tuning as in GPT-1: L = L_cls + lm_weight * L_lm, both means over the micro-batch; lm_weight is
    `model.aux_lm_weight`, the number of classes `data.info["num_classes"]` (default 2).

    Batches: "inputs" int32 [B, T] (right-padded), "lengths" int32 [B] (real tokens per row; 0 marks an empty row,
    which counts for nothing) and "labels" int32 [B]. L_lm is next-token cross entropy over each row's real tokens.
    The engine's (sum, count) contract with count = rows: loss_sum = sum CE_cls + lm_weight * mean(L_lm) * count.
    aux (sums, so the engine's means are per row): "accuracy" (argmax == label), "cls_loss" and, with
    lm_weight > 0, "lm_loss". Padding ids never matter; with lm_weight 0 the output projection is not computed.
    """
    cfg = model_from_config(run_cfg, data.vocab_size).config
    num_classes, lm_weight = int(data.info.get("num_classes", 2)), cfg.aux_lm_weight
    model = GPTClassifier(cfg, num_classes, dtype=DTYPES[run_cfg.train.dtype])
    batch, seq_len = run_cfg.data.batch_size, run_cfg.data.seq_len
    example = {"inputs": jax.ShapeDtypeStruct((batch, seq_len), jnp.int32),
               **{k: jax.ShapeDtypeStruct((batch,), jnp.int32) for k in ("lengths", "labels")}}
    lm = lm_weight > 0

    def init_fn(rng, batch):  # lm=True: the full GPT's params (an untied lm_head too), so pretrained ones fit
        return model.init(rng, batch["inputs"], batch["lengths"], lm=True)

    def loss_fn(params, batch, rng, train):
        rngs = {"dropout": rng} if rng is not None else {}
        tokens, lengths, labels = batch["inputs"], batch["lengths"], batch["labels"]
        out = model.apply({"params": params}, tokens, lengths, train=train, lm=lm, rngs=rngs)
        logits, lm_logits = out if lm else (out, None)
        real = lengths > 0
        cls_sum, count = token_cross_entropy(logits, labels, real)
        aux = {"accuracy": jnp.sum((jnp.argmax(logits, -1) == labels) & real).astype(jnp.float32),
               "cls_loss": cls_sum}
        if not lm:
            return cls_sum, count, aux
        targets_real = jnp.arange(1, tokens.shape[1])[None, :] < lengths[:, None]  # token t + 1 is a real one
        lm_sum, lm_count = token_cross_entropy(lm_logits[:, :-1, : cfg.vocab_size], tokens[:, 1:], targets_real)
        aux["lm_loss"] = lm_sum / jnp.maximum(lm_count, 1) * count
        return cls_sum + lm_weight * aux["lm_loss"], count, aux

    # As make_task's estimate: 6 per matmul weight per token (lookups excluded), plus attention.
    params = nn.meta.unbox(jax.eval_shape(init_fn, jax.random.key(0), example))["params"]
    trunk = params["gpt"]
    output = trunk["lm_head"]["kernel"].size if "lm_head" in trunk else trunk["wte"].size  # the LM projection
    body = count_params(params) - trunk["wpe"].size - trunk["wte"].size - ("lm_head" in trunk) * output
    flops = 6 * (body + lm * output) + 12 * cfg.n_layer * cfg.n_embd * seq_len
    return Task(model=model, loss_fn=loss_fn, example_batch=example, init_fn=init_fn, flops_per_token=float(flops),
                tokens_per_example=seq_len)


# --------------------------------------------------------------------------------------------------------- presets


@register_preset("shakespeare_char", "char-level GPT (4x128) on tiny_shakespeare; trains in minutes on 2 CPU cores")
def shakespeare_char() -> RunConfig:
    """nanoGPT's CPU configuration of train_shakespeare_char (README): eval loss about 1.88 after 2000 steps."""
    return RunConfig(
        name="shakespeare_char",
        model=GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, dropout=0.0, bias=False),
        data=DataConfig(dataset="tiny_shakespeare", tokenizer="char", seq_len=64, batch_size=12),
        optim=OptimConfig(lr=1e-3, end_lr=1e-4, warmup_steps=100, weight_decay=0.1, b2=0.99, clip_norm=1.0),
        train=TrainConfig(steps=2000, eval_every=250, eval_batches=20, checkpoint_every=500, steps_per_call=10),
    )


@register_preset("shakespeare_char_nanogpt", "nanoGPT's GPU shakespeare-char GPT (6x384, block 256, dropout 0.2)")
def shakespeare_char_nanogpt() -> RunConfig:
    """nanoGPT's config/train_shakespeare_char.py: about 1.47 validation loss after 5000 steps."""
    return RunConfig(
        name="shakespeare_char_nanogpt",
        model=GPTConfig(block_size=256, n_layer=6, n_head=6, n_embd=384, dropout=0.2, bias=False),
        data=DataConfig(dataset="tiny_shakespeare", tokenizer="char", seq_len=256, batch_size=64),
        optim=OptimConfig(lr=1e-3, end_lr=1e-4, warmup_steps=100, weight_decay=0.1, b2=0.99, clip_norm=1.0),
        train=TrainConfig(steps=5000, eval_every=250, eval_batches=200, checkpoint_every=1000),
    )


def _gpt2(name: str, n_layer: int, n_head: int, n_embd: int, lr: float) -> RunConfig:
    """GPT-2 shapes (50257 BPE ids, 1024 positions, tanh GELU, biases) with nanoGPT's train_gpt2 recipe: about
    0.5M tokens per step (12 x 1024 x 40 accumulated), 600k steps, b2 0.95; lr per size from GPT-3's table."""
    return RunConfig(
        name=name,
        model=GPTConfig(vocab_size=50257, block_size=1024, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                        bias=True, gelu_approximate=True),
        data=DataConfig(dataset="tiny_shakespeare", tokenizer="bpe", vocab_size=50257, seq_len=1024, batch_size=12),
        optim=OptimConfig(lr=lr, end_lr=lr / 10, warmup_steps=2000, weight_decay=0.1, b2=0.95, clip_norm=1.0,
                          grad_accum=40),
        train=TrainConfig(steps=600_000, eval_every=1000, eval_batches=200, checkpoint_every=2000),
    )


@register_preset("gpt2_124m", "GPT-2 small: 12 layers, 768 wide, 12 heads (124M parameters)")
def gpt2_124m() -> RunConfig:
    return _gpt2("gpt2_124m", 12, 12, 768, 6e-4)


@register_preset("gpt2_355m", "GPT-2 medium: 24 layers, 1024 wide, 16 heads (355M parameters)")
def gpt2_355m() -> RunConfig:
    return _gpt2("gpt2_355m", 24, 16, 1024, 3e-4)


@register_preset("gpt2_774m", "GPT-2 large: 36 layers, 1280 wide, 20 heads (774M parameters)")
def gpt2_774m() -> RunConfig:
    return _gpt2("gpt2_774m", 36, 20, 1280, 2.5e-4)


@register_preset("gpt2_1_5b", "GPT-2 XL: 48 layers, 1600 wide, 25 heads (1.5B parameters)")
def gpt2_1_5b() -> RunConfig:
    return _gpt2("gpt2_1_5b", 48, 25, 1600, 2e-4)


@register_preset("gpt_smoke", "tiny GPT (2x32) on tiny_shakespeare for 20 steps: a seconds-long end-to-end test")
def gpt_smoke() -> RunConfig:
    return RunConfig(
        name="gpt_smoke",
        model=GPTConfig(block_size=16, n_layer=2, n_head=2, n_embd=32),
        data=DataConfig(dataset="tiny_shakespeare", tokenizer="char", seq_len=16, batch_size=4),
        optim=OptimConfig(lr=1e-3, warmup_steps=5),
        train=TrainConfig(steps=20, eval_every=10, eval_batches=2, log_every=5, checkpoint_every=10, sample_tokens=24),
    )


@register_preset("gpt_imdb", "GPT (4x256, context 128, WordPiece 8k) on IMDB reviews: the SST-2 fine-tuning trunk")
def gpt_imdb() -> RunConfig:
    """GPT-1's pretraining in miniature (about 35 minutes for 2,000 steps on 2 CPU cores;
    experiments/gpt_sst2_finetune.py): a lowercasing WordPiece tokenizer fitted on the 25,000 IMDB train reviews
    (SST-2, the fine-tuning task, is lowercased and split at punctuation), each review preceded by [SEP], every
    tenth test review held out for the eval loss (task doc_lm)."""
    return RunConfig(
        name="gpt_imdb",
        task="doc_lm",
        model=GPTConfig(block_size=128, n_layer=4, n_head=4, n_embd=256, dropout=0.0),
        data=DataConfig(dataset="imdb", tokenizer="wordpiece", vocab_size=8192, seq_len=128, batch_size=32),
        optim=OptimConfig(lr=1e-3, end_lr=1e-4, warmup_steps=100, weight_decay=0.1, b2=0.99, clip_norm=1.0),
        train=TrainConfig(steps=2000, eval_every=200, eval_batches=20, checkpoint_every=200, log_every=10,
                          steps_per_call=10, sample_tokens=40, sample_prompt="this movie"),
    )


def _sst2(name: str, *, lr: float, dropout: float, lm_weight: float, pretrained: bool, freeze: tuple[str, ...] = ()):
    """GPT-1's fine-tuning recipe (AdamW, weight decay 0.01, linear warmup over 10% then decay, batch 32) on the
    first 2,000 SST-2 train sentences, 300 steps (4.8 epochs), accuracy on the whole dev set at the end; the
    gpt_imdb model and tokenizer (runs/gpt_imdb), its parameters too when `pretrained`. Seeds: --set train.seed=K
    --set data.seed=K (initialisation of what is not loaded, batch order, dropout)."""
    return RunConfig(
        name=name,
        task="classify",
        model=GPTConfig(block_size=128, n_layer=4, n_head=4, n_embd=256, dropout=dropout, aux_lm_weight=lm_weight),
        data=DataConfig(dataset="sst2", tokenizer="wordpiece", vocab_size=8192, seq_len=128, batch_size=32,
                        eval_batch_size=64, max_examples=2000, tokenizer_dir="runs/gpt_imdb/tokenizer"),
        optim=OptimConfig(lr=lr, end_lr=0.0, schedule="linear", warmup_steps=30, weight_decay=0.01, b2=0.999,
                          clip_norm=1.0, freeze=freeze),
        train=TrainConfig(steps=300, eval_every=300, log_every=10, checkpoint_every=0, keep_checkpoints=1,
                          best_metric="", sample_tokens=0, init_from="runs/gpt_imdb" if pretrained else "",
                          init_target="gpt" if pretrained else ""),
    )


@register_preset("sst2_scratch", "SST-2 (2k sentences): the gpt_imdb architecture trained from scratch")
def sst2_scratch() -> RunConfig:
    return _sst2("sst2_scratch", lr=3e-4, dropout=0.1, lm_weight=0.0, pretrained=False)


@register_preset("sst2_frozen", "SST-2 (2k sentences): a linear probe on the frozen gpt_imdb trunk")
def sst2_frozen() -> RunConfig:
    return _sst2("sst2_frozen", lr=1e-2, dropout=0.0, lm_weight=0.0, pretrained=True, freeze=FREEZE_TRUNK)


@register_preset("sst2_finetune", "SST-2 (2k sentences): gpt_imdb fully fine-tuned, L = L_cls + 0.5 L_lm")
def sst2_finetune() -> RunConfig:
    return _sst2("sst2_finetune", lr=1e-4, dropout=0.1, lm_weight=0.5, pretrained=True)


@register_preset("gpt_classify_smoke", "tiny GPT classifier on 64 SST-2 sentences for 10 steps: a seconds-long test")
def gpt_classify_smoke() -> RunConfig:
    return RunConfig(
        name="gpt_classify_smoke",
        task="classify",
        model=GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=32, dropout=0.1, aux_lm_weight=0.5),
        data=DataConfig(dataset="sst2", tokenizer="word", min_freq=1, seq_len=64, batch_size=8, eval_batch_size=64,
                        max_examples=64),
        optim=OptimConfig(lr=1e-3, schedule="linear", warmup_steps=2),
        train=TrainConfig(steps=10, eval_every=10, log_every=5, checkpoint_every=10, sample_tokens=0,
                          best_metric="eval_accuracy"),
    )
