"""lmjax's Multi30k Transformer against a `torch.nn.Transformer` twin: training tokens/s and beam-search sentences/s.

    python benchmarks/transformer_vs_torch.py                  # multi30k_transformer, 3 rounds x 20 steps each
    python benchmarks/transformer_vs_torch.py --decode-from runs/multi30k_transformer   # decode a trained model
    python benchmarks/transformer_vs_torch.py --quick --out /tmp/tvt.json   # d=32, 1+1 layers, 3 x 1 step, 4 sentences

Both train the `multi30k_transformer` preset (`--set` overrides it): a post-LN encoder-decoder, d=256, 4 heads,
d_ff=1024, 3+3 layers, one embedding table shared by the source, the target and the output (x sqrt(d) on the way
in), sinusoidal positions, dropout 0.3 on the embeddings and residual branches and 0.1 on the attention weights and
the ReLU activations, label-smoothed (0.1, over the real vocabulary) cross entropy summed over the real target tokens
and divided by their count, AdamW (0.9, 0.98, 1e-9, decoupled weight decay 1e-4 on the matrices only) at
lr = 1e-3 min(s / 1000, sqrt(1000 / s)), no gradient clipping (the preset's clip_norm is 0).

- lmjax: `Engine.train_steps`, one jit-compiled step per batch (YNN fusion, tcmalloc and the persistent compilation
  cache, as `lmjax train` runs).
- torch: `nn.Transformer(d, heads, 3, 3, d_ff, batch_first=True, norm_first=False)` with its two final LayerNorms
  removed (lmjax's post-LN stacks end normalised, without one) and its dropouts set per site as above (nn.Transformer
  has one rate for all), `nn.Embedding` + the same sinusoids, `F.cross_entropy(label_smoothing=0.1)`,
  `torch.optim.AdamW(fused=True)` with the same parameter groups and a `LambdaLR` of the same schedule, eager, at
  `--torch-threads` threads (2). Its weights start as a copy of lmjax's initial ones, and before training the two
  losses of the first batch without dropout must agree (else the script stops): the same function, the same numbers.

Batches: a fixed list of `--steps` real Multi30k de->en training batches from `TokenBudgetPairs` (2,048 tokens per
side, the joint BPE of `parallel_corpus`, data from $LMJAX_DATA_DIR), the same for both. Every batch shape is
compiled (lmjax) or run once (torch) first, on throwaway copies, outside the timing. Then `--rounds` rounds, each
system training once over the whole list per round, the order swapping every round so drifts in the machine's load
hit both alike; tokens/s = real target tokens (the tgt_mask sum) / the round's time, median over rounds. Both keep
training across rounds, so the mean loss of the first and of the last round (the same batches) show that both learn
alike. MFU: the task's FLOPs per target token x tokens/s over the fp32 matmul peak of `lmjax.hardware`.

Decoding: the first `--decode-sentences` test2016 sources, beam 5, GNMT length penalty 0.6, at most source width +
50 tokens, in batches of 64 sorted by length. lmjax: `lmjax.models.transformer.translate` (encoder once, KV caches,
one position per step). torch: the batched beam search below, the same algorithm, which reruns `nn.Transformer`'s
decoder over the whole prefix at every step (nn.Transformer has no KV cache; this is how it is decoded), the
encoder once. Both decode the same weights: lmjax's after the timed training, or a trained run's latest checkpoint
(`--decode-from RUN_DIR`, whose tokenizer the whole benchmark then uses), copied into the torch model, so their
translations should agree (decode_agreement). A barely trained model's translations are degenerate (often empty:
eos first wins), so its sentences/s say little about real decoding, where each extra token costs torch's
recomputation the most: pass --decode-from for realistic numbers (decode_mean_words tells which it was). Warm-up
calls first, then `--decode-rounds` alternating rounds; sentences/s is the median.

Writes benchmarks/results/transformer_vs_torch.json: tokens_per_s, torch_tokens_per_s, speedup (lmjax / torch),
decode_sentences_per_s, torch_decode_sentences_per_s, decode_speedup, mfu, torch_mfu, the losses, the settings.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
import time
import warnings

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESET = "multi30k_transformer"
QUICK = ["model.d_model=32", "model.num_heads=2", "model.d_ff=64", "model.enc_layers=1", "model.dec_layers=1",
         "model.max_len=64", "model.decode_extra=8", "data.vocab_size=500", "data.max_tokens=256"]
GOAL = 1.5  # lmjax / torch training tokens/s aimed at


# ------------------------------------------------------------------------------------------------- torch model


def torch_model(cfg, vocab_size: int):
    """The torch twin of `lmjax.models.transformer.Transformer` for `cfg` (a TransformerConfig): post-LN, sinusoidal
    positions, one tied table."""
    import numpy as np
    import torch
    from torch import nn

    from lmjax.ops.positional import sinusoidal

    class TorchTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            d = cfg.d_model
            self.scale = math.sqrt(d) if cfg.scale_embeddings else 1.0
            self.embed = nn.Embedding(vocab_size, d)
            self.register_buffer("pe", torch.from_numpy(np.array(sinusoidal(cfg.max_len, d))))
            self.drop = nn.Dropout(cfg.dropout)
            self.core = nn.Transformer(d, cfg.num_heads, cfg.enc_layers, cfg.dec_layers, cfg.d_ff, cfg.dropout,
                                       activation="relu", layer_norm_eps=cfg.epsilon, batch_first=True,
                                       norm_first=False)
            self.core.encoder.norm = None  # nn.Transformer adds a final LayerNorm per stack; post-LN needs none
            self.core.decoder.norm = None
            for layer in [*self.core.encoder.layers, *self.core.decoder.layers]:
                layer.dropout.p = cfg.activation_dropout  # on the feed-forward's hidden units
                layer.self_attn.dropout = cfg.attention_dropout  # on the softmax weights
                if hasattr(layer, "multihead_attn"):
                    layer.multihead_attn.dropout = cfg.attention_dropout
                # dropout1/2(/3) stay at cfg.dropout: the residual branches

        def embed_tokens(self, ids):
            return self.drop(self.embed(ids) * self.scale + self.pe[:ids.shape[1]])

        def encode(self, src, src_pad):
            return self.core.encoder(self.embed_tokens(src), src_key_padding_mask=src_pad)

        def decode(self, tgt_in, memory, src_pad):
            t = tgt_in.shape[1]
            causal = nn.Transformer.generate_square_subsequent_mask(t, dtype=memory.dtype)
            return self.core.decoder(self.embed_tokens(tgt_in), memory, tgt_mask=causal, tgt_is_causal=True,
                                     memory_key_padding_mask=src_pad)

        def logits(self, y):
            return y @ self.embed.weight.T

        def forward(self, src, src_pad, tgt_in):
            return self.logits(self.decode(tgt_in, self.encode(src, src_pad), src_pad))

    return TorchTransformer()


def load_lmjax_params(tm, params) -> None:
    """Copy lmjax Transformer parameters (a nested dict of arrays, torch's layout up to reshapes) into `tm`."""
    import numpy as np
    import torch

    def t(x):
        return torch.from_numpy(np.array(x, np.float32))

    def linear(dst, p):  # a Linear: kernel [*out, *in] -> weight [out, in]
        k = np.asarray(p["kernel"])
        return k.reshape(dst.weight.shape), np.asarray(p["bias"]).reshape(dst.bias.shape)

    def attention(dst, p, cross: bool):
        c = dst.embed_dim
        if cross:
            w = np.concatenate([np.asarray(p["q_attn"]["kernel"]).reshape(c, c),
                                np.asarray(p["kv_attn"]["kernel"]).reshape(2 * c, c)])
            b = np.concatenate([np.asarray(p["q_attn"]["bias"]).reshape(c),
                                np.asarray(p["kv_attn"]["bias"]).reshape(-1)])
        else:
            w, b = np.asarray(p["c_attn"]["kernel"]).reshape(3 * c, c), np.asarray(p["c_attn"]["bias"]).reshape(-1)
        pairs = [(dst.in_proj_weight, w), (dst.in_proj_bias, b)]
        w, b = linear(dst.out_proj, p["c_proj"])
        return pairs + [(dst.out_proj.weight, w), (dst.out_proj.bias, b)]

    def norm(dst, p):
        return [(dst.weight, p["scale"]), (dst.bias, p["bias"])]

    vocab = tm.embed.weight.shape[0]
    pairs = [(tm.embed.weight, np.asarray(params["embed"]["embedding"])[:vocab])]
    for stack, layers in (("encoder", tm.core.encoder.layers), ("decoder", tm.core.decoder.layers)):
        for i, layer in enumerate(layers):
            p = params[stack][f"layers_{i}"]
            pairs += attention(layer.self_attn, p["attn"], cross=False)
            for lin, name in ((layer.linear1, "c_fc"), (layer.linear2, "c_proj")):
                w, b = linear(lin, p["mlp"][name])
                pairs += [(lin.weight, w), (lin.bias, b)]
            pairs += norm(layer.norm1, p["ln_1"])
            if stack == "encoder":
                pairs += norm(layer.norm2, p["ln_2"])
            else:
                pairs += attention(layer.multihead_attn, p["cross_attn"], cross=True)
                pairs += norm(layer.norm2, p["ln_cross"]) + norm(layer.norm3, p["ln_2"])
    with torch.no_grad():
        for dst, src in pairs:
            src = t(src)
            if src.shape != dst.shape:
                raise SystemExit(f"error: parameter shapes differ ({tuple(src.shape)} vs {tuple(dst.shape)}): "
                                 "the torch twin supports the preset's architecture only")
            dst.copy_(src)
    n_torch = sum(p.numel() for p in tm.parameters())
    if sum(int(dst.numel()) for dst, _ in pairs) != n_torch:
        raise SystemExit("error: not every torch parameter has an lmjax counterpart: the twin's layout changed")


def torch_optimizer(tm, ocfg, torch):
    """AdamW as lmjax's optax.adamw: decay on parameters with ndim >= 2 (optim.decay_mask), the same schedule."""
    decay = [p for p in tm.parameters() if p.ndim >= 2 or ocfg.decay_mask == "all"]
    rest = [p for p in tm.parameters() if not (p.ndim >= 2 or ocfg.decay_mask == "all")]
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    kw = dict(lr=ocfg.lr, betas=(ocfg.b1, ocfg.b2), eps=ocfg.eps)
    try:
        opt, name = torch.optim.AdamW(groups, fused=True, **kw), "AdamW(fused=True)"
    except (RuntimeError, TypeError):  # no fused CPU kernel in this torch
        opt, name = torch.optim.AdamW(groups, **kw), "AdamW"
    w = max(int(ocfg.warmup_steps), 1)
    # lmjax: linear 0 -> lr over the warm-up, then lr sqrt(w / s); step s is the 0-based update count.
    factor = (lambda s: s / w if s < w else math.sqrt(w / s)) if ocfg.warmup_steps > 0 else (  # noqa: E731
        lambda s: math.sqrt(w / max(s + w, 1)))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor), name


def torch_batch(b, torch):
    """Host batch -> torch tensors: ids as int64, key padding masks (True = padding), targets with -100 at padding.
    A row without any source token (filling a bucket's last batch) keeps position 0 unmasked, so its attention is no
    0/0; its target positions are all padding anyway."""
    src_pad = ~b["src_mask"].copy()
    src_pad[~b["src_mask"].any(1), 0] = False
    targets = b["tgt_out"].astype("int64")
    targets[~b["tgt_mask"]] = -100
    return {"src": torch.from_numpy(b["src"].astype("int64")), "src_pad": torch.from_numpy(src_pad),
            "tgt_in": torch.from_numpy(b["tgt_in"].astype("int64")), "targets": torch.from_numpy(targets),
            "count": float(b["tgt_mask"].sum())}


def torch_loss(tm, tb, label_smoothing: float, torch):
    logits = tm(tb["src"], tb["src_pad"], tb["tgt_in"])
    loss_sum = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tb["targets"].reshape(-1),
                                                 ignore_index=-100, label_smoothing=label_smoothing, reduction="sum")
    return loss_sum / max(tb["count"], 1.0)


# ------------------------------------------------------------------------------------------------- torch decoding


def torch_beam(tm, src, src_pad, *, bos_id: int, eos_id: int, pad_id: int, max_len: int, beam_size: int,
               length_penalty: float, torch):
    """`lmjax.ops.sampling.beam_search` in torch, batched: the k best hypotheses by log p(y) / ((5 + |y|) / 6)^alpha.
    The encoder runs once; each step reruns the decoder over bos + the whole prefix of every alive beam (no KV
    cache) and scores only the last position. Returns (sequences int64 [B, k, max_len], padded with pad_id after
    eos, scores [B, k]), best first."""
    b, k = src.shape[0], beam_size
    neg = float("-inf")
    memory = tm.encode(src, src_pad).repeat_interleave(k, 0)  # a sentence's beams share it: no reordering
    pad = src_pad.repeat_interleave(k, 0)
    alive_logp = torch.full((b, k), neg)
    alive_logp[:, 0] = 0.0  # only beam 0 starts alive
    alive = torch.full((b, k, max_len), pad_id, dtype=torch.long)
    fin_scores = torch.full((b, k), neg)
    fin = torch.full((b, k, max_len), pad_id, dtype=torch.long)
    bos = torch.full((b * k, 1), bos_id, dtype=torch.long)
    rows = torch.arange(b)[:, None]

    def penalty(n):
        return ((5.0 + n) / 6.0) ** length_penalty

    max_penalty = penalty(max_len)
    i = 0
    while i < max_len and not bool((fin_scores[:, -1] > alive_logp[:, 0] / max_penalty).all()):
        prefix = torch.cat([bos, alive[:, :, :i].reshape(b * k, i)], 1)
        y = tm.decode(prefix, memory, pad)[:, -1]
        logp = torch.log_softmax(tm.logits(y).float(), -1).reshape(b, k, -1)
        vocab = logp.shape[-1]
        cand = alive_logp[:, :, None] + logp
        eos_seqs = alive.clone()
        eos_seqs[:, :, i] = eos_id
        fin_scores, best = torch.cat([fin_scores, cand[:, :, eos_id] / penalty(i + 1)], 1).topk(k, 1)
        fin = torch.cat([fin, eos_seqs], 1)[rows, best]
        cand[:, :, eos_id] = neg
        alive_logp, flat = cand.reshape(b, k * vocab).topk(k, 1)
        parent, token = flat // vocab, flat % vocab
        alive = alive[rows, parent]
        alive[:, :, i] = token
        i += 1
    alive_scores = alive_logp / max_penalty if i == max_len else torch.full((b, k), neg)
    scores, best = torch.cat([fin_scores, alive_scores], 1).topk(k, 1)
    return torch.cat([fin, alive], 1)[rows, best], scores


def torch_translate(tm, mcfg, tokenizer, sentences, *, beam_size: int, batch_size: int, torch,
                    width_multiple: int = 8) -> list[str]:
    """`lmjax.models.transformer.translate` with `torch_beam`: the same sorting, batches, widths and length limits
    (a batch holds only its real rows: torch needs no fixed shapes)."""
    import numpy as np

    from lmjax.data.translation import encode_lines
    from lmjax.models.transformer import cut_at_eos

    ids = [x[:mcfg.max_len] for x in encode_lines(tokenizer, list(sentences))]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [""] * len(ids)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(width_multiple, -(-max(len(ids[i]) for i in rows) // width_multiple) * width_multiple)
            src = np.full((len(rows), width), tokenizer.pad_id, np.int64)
            pad = np.ones((len(rows), width), bool)
            for r, i in enumerate(rows):
                src[r, :len(ids[i])], pad[r, :len(ids[i])] = ids[i], False
            pad[pad.all(1), 0] = False  # an empty source: see torch_batch
            seqs, _ = torch_beam(tm, torch.from_numpy(src), torch.from_numpy(pad), bos_id=tokenizer.bos_id,
                                 eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                                 max_len=min(mcfg.max_len, width + mcfg.decode_extra), beam_size=beam_size,
                                 length_penalty=mcfg.length_penalty, torch=torch)
            for r, i in enumerate(rows):
                out[i] = tokenizer.decode(cut_at_eos(seqs[r, 0].numpy(), tokenizer.eos_id))
    return out


# ------------------------------------------------------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="training batches in the fixed list = steps per round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds, each system training over the list")
    p.add_argument("--torch-threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--omp-passive", action="store_true",
                   help="OMP_WAIT_POLICY=PASSIVE for torch's OpenMP threads (for a heavily loaded machine)")
    p.add_argument("--decode-sentences", type=int, default=128, help="decode the first N test2016 sources")
    p.add_argument("--decode-batch", type=int, default=64, help="sentences per decoding batch (both systems)")
    p.add_argument("--decode-rounds", type=int, default=2, help="alternating timed decoding rounds")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--decode-from", type=pathlib.Path, default=None, metavar="RUN_DIR",
                   help="decode the latest checkpoint of this trained multi30k_transformer run (and use its "
                        "tokenizer throughout) instead of the benchmark's own barely trained weights")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"override the {PRESET} preset (repeatable), e.g. --set data.max_tokens=4096")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: d=32, 1+1 layers, 500 BPE tokens, 3 rounds x 1 step, 4 sentences")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "transformer_vs_torch.json",
                   help="results JSON (default benchmarks/results/transformer_vs_torch.json)")
    args = p.parse_args()
    overrides = list(args.set)
    if args.quick:
        args.steps, args.rounds, args.decode_sentences, args.decode_batch, args.decode_rounds = 1, 3, 4, 4, 1
        overrides = QUICK + overrides
    if min(args.steps, args.rounds, args.decode_sentences, args.decode_batch, args.decode_rounds, args.beam,
           args.torch_threads) < 1:
        sys.exit("error: --steps, --rounds, --decode-sentences, --decode-batch, --decode-rounds, --beam and "
                 "--torch-threads must be >= 1")
    if args.decode_from is not None:
        if not (args.decode_from / "tokenizer").is_dir():
            sys.exit(f"error: {args.decode_from}/tokenizer is missing: pass the run directory of a trained "
                     f"{PRESET} run (lmjax train {PRESET})")
        overrides.append(f"data.tokenizer_dir={args.decode_from / 'tokenizer'}")
    if args.omp_passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

    from lmjax.runtime import reexec_with_tcmalloc, use_ynn_fusion

    use_ynn_fusion()  # what `lmjax train` does on CPU, before JAX starts its backend
    reexec_with_tcmalloc([sys.executable, *sys.argv])
    load_before = os.getloadavg()[0]
    if load_before > len(os.sched_getaffinity(0)) and not args.omp_passive:
        # Measured here at load 8 on 2 cores: torch's actively waiting OpenMP threads ran a tiny step 40x slower.
        print(f"warning: load average {load_before:.1f} exceeds the cores: torch's OpenMP threads spin at every "
              "barrier while descheduled; its numbers mean little (pass --omp-passive or wait for a quiet machine)",
              file=sys.stderr)

    import jax
    import numpy as np
    import torch

    from lmjax.config import get_preset
    from lmjax.hardware import device_peak_flops
    from lmjax.models.transformer import translate
    from lmjax.results import write_results
    from lmjax.runtime import enable_compilation_cache
    from lmjax.train.engine import Engine

    enable_compilation_cache()
    # torch's inference fast path (decoding) packs padded sources into nested tensors, and says so each time.
    warnings.filterwarnings("ignore", message="The PyTorch API of nested tensors")
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)

    # --------------------------------------------------------------------------------------------- set-up
    cfg = get_preset(PRESET, ["train.resume=false", "train.progress=false", *overrides])
    mcfg = cfg.model
    if (mcfg.norm, mcfg.positions, mcfg.tie, mcfg.activation, cfg.train.dtype) != ("post", "sinusoidal", "all",
                                                                                 "relu", "float32"):
        sys.exit("error: the torch twin is post-LN, sinusoidal, fully tied, ReLU and fp32: drop the --set that "
                 "changes model.norm, positions, tie, activation or train.dtype")
    o = cfg.optim
    if o.grad_accum != 1 or o.name != "adamw" or o.freeze or o.schedule != "inverse_sqrt":
        sys.exit("error: keep optim.name=adamw, optim.schedule=inverse_sqrt, optim.grad_accum=1 and no optim.freeze "
                 "(what the torch twin's optimizer reproduces)")
    t0 = time.perf_counter()
    engine = Engine(cfg)  # fits the joint BPE on train (or loads --decode-from's), batches by tokens
    tok, model = engine.data.tokenizer, engine.task.model
    mcfg = model.config  # with the tokenizer's vocab_size
    vocab = mcfg.vocab_size
    it = engine.data.train(0, 1)
    batches = [next(it) for _ in range(args.steps)]
    host = [{k: v[None, None] for k, v in b.items()} for b in batches]  # [K=1, A=1, B, ...] each
    tokens = [int(b["tgt_mask"].sum()) for b in batches]
    shapes = {(b["src"].shape, b["tgt_in"].shape): i for i, b in enumerate(batches)}
    print(f"data: {len(batches)} batches, {sum(tokens)} target tokens, {len(shapes)} shapes, vocab {vocab} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)

    state = engine.init_state()
    params0 = jax.device_get(state.params)
    tm = torch_model(mcfg, vocab)
    load_lmjax_params(tm, params0)
    tb = [torch_batch(b, torch) for b in batches]

    # The same function: the first batch's loss without dropout, both ways.
    loss_eval = jax.jit(lambda prm, b: engine.task.loss_fn(prm, b, None, False)[:2])
    with engine.activate():
        s, n = loss_eval(state.params, batches[0])
    jax_loss0 = float(s) / float(n)
    tm.eval()
    with torch.no_grad():
        torch_loss0 = float(torch_loss(tm, tb[0], mcfg.label_smoothing, torch))
    tm.train()
    print(f"first batch, no dropout: lmjax loss {jax_loss0:.6f}, torch {torch_loss0:.6f}", flush=True)
    if not math.isclose(jax_loss0, torch_loss0, rel_tol=1e-4):
        raise SystemExit(f"error: the two models disagree on the first batch ({jax_loss0} vs {torch_loss0}): the "
                         "torch twin does not compute lmjax's function")

    opt, sched, opt_name = torch_optimizer(tm, cfg.optim, torch)

    def lmjax_round():
        nonlocal state
        metrics = []
        start = time.perf_counter()
        for h in host:
            state, m = engine.train_steps(state, h)
            metrics.append(m["loss"])
        jax.block_until_ready((state, metrics))
        return time.perf_counter() - start, [float(np.asarray(m)[0]) for m in metrics]

    def torch_steps(model_, opt_, sched_, items):
        losses = []
        for item in items:
            loss = torch_loss(model_, item, mcfg.label_smoothing, torch)
            opt_.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(model_.parameters(), cfg.optim.clip_norm)
            opt_.step()
            sched_.step()
            losses.append(loss.detach())
        return [float(x) for x in losses]

    def torch_round():
        start = time.perf_counter()
        losses = torch_steps(tm, opt, sched, tb)
        return time.perf_counter() - start, losses

    # Warm-up, untimed, on throwaway copies: every batch shape compiled for lmjax and run once by torch.
    t0 = time.perf_counter()
    warm, compile_each = engine.init_state(), []
    for i in shapes.values():
        start = time.perf_counter()
        warm, m = engine.train_steps(warm, host[i])
        jax.block_until_ready(m)
        compile_each.append(round(time.perf_counter() - start, 2))
    del warm
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    twin = torch_model(mcfg, vocab)
    load_lmjax_params(twin, params0)
    twin_opt, twin_sched, _ = torch_optimizer(twin, cfg.optim, torch)
    torch_steps(twin, twin_opt, twin_sched, [tb[i] for i in shapes.values()])
    del twin, twin_opt, twin_sched
    print(f"warm-up: lmjax compiled {len(shapes)} shapes in {compile_s:.1f} s ({compile_each}), torch ran them in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)

    # ------------------------------------------------------------------------------------------ training rounds
    rounds = {"lmjax": [], "torch": []}
    losses = {"lmjax": [], "torch": []}
    runners = {"lmjax": lmjax_round, "torch": torch_round}
    for r in range(args.rounds):
        for name in (("lmjax", "torch") if r % 2 == 0 else ("torch", "lmjax")):
            seconds, ls = runners[name]()
            rounds[name].append(sum(tokens) / seconds)
            losses[name].append(ls)
        said = (f"{k} {rounds[k][-1]:,.0f} tok/s (mean loss {statistics.mean(losses[k][-1]):.4f})" for k in runners)
        print(f"round {r}: {', '.join(said)}", flush=True)
    tok_s, torch_tok_s = (statistics.median(rounds[k]) for k in ("lmjax", "torch"))
    peak_gflops = device_peak_flops("float32") / 1e9
    flops = engine.task.flops_per_token

    # -------------------------------------------------------------------------------------------------- decoding
    if args.decode_from is not None:
        from lmjax.train.pretrained import load_params

        ckpt_step, dec_params = load_params(args.decode_from)
        decode_params = f"{args.decode_from} step {ckpt_step}"
    else:
        dec_params = jax.device_get(state.params)
        decode_params = f"lmjax's weights after the {args.rounds * args.steps} timed training steps"
    load_lmjax_params(tm, dec_params)
    tm.eval()
    corpus = engine.data.info["corpus"]
    sentences = [s for s, _ in corpus.text["test2016"][:args.decode_sentences]]
    dec_kw = dict(beam_size=args.beam, batch_size=args.decode_batch)
    t0 = time.perf_counter()
    hyps = translate(model, dec_params, tok, sentences, **dec_kw)  # compiles every width's beam search
    dec_compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    torch_hyps = torch_translate(tm, mcfg, tok, sentences[:min(len(sentences), 2)], torch=torch, **dec_kw)
    print(f"decode warm-up: lmjax {dec_compile_s:.1f} s (compiling), torch {time.perf_counter() - t0:.1f} s",
          flush=True)
    dec_rounds = {"lmjax": [], "torch": []}

    def decode(name):
        start = time.perf_counter()
        if name == "lmjax":
            out = translate(model, dec_params, tok, sentences, **dec_kw)
        else:
            out = torch_translate(tm, mcfg, tok, sentences, torch=torch, **dec_kw)
        return len(sentences) / (time.perf_counter() - start), out

    for r in range(args.decode_rounds):
        for name in (("lmjax", "torch") if r % 2 == 0 else ("torch", "lmjax")):
            rate, out = decode(name)
            dec_rounds[name].append(rate)
            if name == "lmjax":
                hyps = out
            else:
                torch_hyps = out
        print(f"decode round {r}: lmjax {dec_rounds['lmjax'][-1]:.2f} sentences/s, torch "
              f"{dec_rounds['torch'][-1]:.2f}", flush=True)
    dec_s, torch_dec_s = (statistics.median(dec_rounds[k]) for k in ("lmjax", "torch"))
    agree = sum(a == b for a, b in zip(hyps, torch_hyps)) / len(hyps)
    words = lambda hs: statistics.mean(len(h.split()) for h in hs)  # noqa: E731

    first = {k: statistics.mean(v[0]) for k, v in losses.items()}
    last = {k: statistics.mean(v[-1]) for k, v in losses.items()}
    result = {
        "tokens_per_s": tok_s,
        "torch_tokens_per_s": torch_tok_s,
        "speedup": tok_s / torch_tok_s,
        "goal_speedup": GOAL,
        "decode_sentences_per_s": dec_s,
        "torch_decode_sentences_per_s": torch_dec_s,
        "decode_speedup": dec_s / torch_dec_s,
        "mfu": flops * tok_s / (peak_gflops * 1e9),
        "torch_mfu": flops * torch_tok_s / (peak_gflops * 1e9),
        "flops_per_token": flops,
        "steps": args.steps,
        "rounds": args.rounds,
        "target_tokens_per_round": sum(tokens),
        "target_positions_per_round": sum(int(b["tgt_mask"].size) for b in batches),
        "batch_shapes": len(shapes),
        "tokens_per_s_rounds": rounds["lmjax"],
        "torch_tokens_per_s_rounds": rounds["torch"],
        "loss_first_round": first["lmjax"],
        "loss_last_round": last["lmjax"],
        "torch_loss_first_round": first["torch"],
        "torch_loss_last_round": last["torch"],
        "losses": losses["lmjax"],
        "torch_losses": losses["torch"],
        "first_batch_eval_loss": jax_loss0,
        "torch_first_batch_eval_loss": torch_loss0,
        "lmjax_compile_s": compile_s,
        "lmjax_compile_s_per_shape": compile_each,
        "decode_sentences": len(sentences),
        "decode_batch": args.decode_batch,
        "beam_size": args.beam,
        "length_penalty": mcfg.length_penalty,
        "decode_max_len": f"min({mcfg.max_len}, source width (a multiple of 8) + {mcfg.decode_extra})",
        "decode_params": decode_params,
        "decode_sentences_per_s_rounds": dec_rounds["lmjax"],
        "torch_decode_sentences_per_s_rounds": dec_rounds["torch"],
        "decode_agreement": agree,
        "decode_mean_words": words(hyps),
        "torch_decode_mean_words": words(torch_hyps),
        "torch_decode": "batched beam search rerunning nn.Transformer's decoder over the whole prefix each step "
                        "(no KV cache), encoder once; logits of the last position only",
        "lmjax_decode": "lmjax.models.transformer.translate: jit-compiled beam search, encoder once, "
                        "cross-attention keys/values once, self-attention KV cache",
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "torch_optimizer": opt_name,
        "jax_threads": "XLA's CPU default (every usable core)",
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", ""),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "preset": PRESET,
        "overrides": overrides,
        "model": {k: getattr(mcfg, k) for k in ("vocab_size", "d_model", "num_heads", "d_ff", "enc_layers",
                                                "dec_layers", "dropout", "attention_dropout", "activation_dropout",
                                                "label_smoothing", "max_len")},
        "max_tokens": cfg.data.max_tokens,
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
        "torch": torch.__version__,
        "jax": jax.__version__,
    }
    # A --decode-from run outside the repository is written as $RUN_DIR (inside it, repository-relative anyway).
    outside = args.decode_from is not None and not args.decode_from.resolve().is_relative_to(ROOT)
    path = write_results(args.out, result, placeholders={"RUN_DIR": args.decode_from} if outside else None)
    import json

    hardware = json.loads(path.read_text(encoding="utf-8"))["hardware"]
    print(f"{'':>6} {'tok/s':>9} {'MFU':>6} {'loss 1st':>9} {'loss last':>9} {'sent/s':>8} {'words':>6}")
    for name, pre in (("lmjax", ""), ("torch", "torch_")):
        print(f"{name:>6} {result[pre + 'tokens_per_s']:9,.0f} {result[pre + 'mfu']:6.1%} "
              f"{result[pre + 'loss_first_round']:9.4f} {result[pre + 'loss_last_round']:9.4f} "
              f"{result[pre + 'decode_sentences_per_s']:8.2f} {result[pre + 'decode_mean_words']:6.1f}")
    print(f"training speedup {result['speedup']:.2f}x (goal {GOAL}x), decoding {result['decode_speedup']:.2f}x, "
          f"{agree:.0%} identical translations; torch at {result['torch_threads']} threads; {hardware}")
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
