"""Multi30k German -> English with the Transformer (Vaswani et al., 2017): BLEU on the four test sets, greedy and beam.

    python experiments/multi30k_transformer.py                # train (resumes), translate: results/<name>.json
    python experiments/multi30k_transformer.py --steps 12000  # train on to step 12,000 from the run's checkpoints
    python experiments/multi30k_transformer.py maps --sentences "ein mann fährt fahrrad ." "zwei hunde spielen ."
    python experiments/multi30k_transformer.py --quick --out /tmp/m30k/multi30k_transformer.json   # 32-wide, 2 steps

Training is preset multi30k_transformer through the engine (`lmjax.train.loop.train`, checkpoints under
runs/multi30k_transformer/): rerunning continues from the run's latest checkpoint, and `--steps` raises the target.
train_s is the wall time of `train()` (data preparation and the periodic evaluations included), summed over the
sessions that trained steps: each session appends {from_step, to_step, train_s} to the run directory's
experiment_sessions.json (a run trained by `lmjax train` alone reports its summary.json's wall_s instead). Then the
best checkpoint by eval_bleu (BLEU of greedy validation translations; the latest, with a note, when none is scored),
or the average of the `--average` latest checkpoints' weights when that translates the validation split better
(`selection` in the results says which and both validation BLEUs), translates test2016, test2017 (Flickr), test2017_mscoco and test2018 greedily and with beam search (model.beam_size,
GNMT length penalty model.length_penalty), and

    BLEU = sacrebleu corpus BLEU, tokenize='none', of the hypotheses against the lowercased, Moses-tokenised
           references of "multi30k/tok" as they are (`lmjax.scoring.bleu`; = multi-bleu.perl there)

with the signature in the results. bleu_<set> is beam search's, bleu_<set>_greedy greedy's (mscoco2017 =
test2017_mscoco). sentences_per_s times a second, compiled beam pass over test2016 (decode_s has every first pass,
compilation included). padding_fraction is `TokenBudgetPairs.padding_fraction` of an epoch of training batches.

Beside the results JSON (`--out`), in a folder of its name: hyps/<split>.<greedy|beam>.txt (one hypothesis a line,
in the split's order, for rescoring) and attention/: for 3 test2016 sentences, one PNG per layer (one subplot per
head, axes labelled with the BPE tokens) of encoder self-attention, decoder masked self-attention (queries and keys:
the decoder's inputs, <bos> and the translation) and cross-attention (rows: the token each decoder position
predicts, the translation and <eos>; columns: the source), all teacher-forced on the model's own greedy translation
and read from the `attention_weights` the attentions sow (apply with mutable=["intermediates"]). `maps` draws them
for --sentences from the trained run's best checkpoint, without training. Multi30k comes from lmjax.data
(`--data-dir`, else $LMJAX_DATA_DIR, else its download). `--quick`: a 2+2-layer, 32-wide model, 2 steps, 20
sentences per test set, run directory and outputs beside --out.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESET = "multi30k_transformer"
SPLITS = {"test2016": "test2016", "test2017": "test2017", "test2017_mscoco": "mscoco2017", "test2018": "test2018"}
KINDS = ("encoder", "decoder_self", "cross")  # the attention maps drawn per layer
QUICK = ["model.d_model=32", "model.num_heads=2", "model.d_ff=64", "model.enc_layers=2", "model.dec_layers=2",
         "model.max_len=16", "model.decode_extra=8", "model.eval_sentences=20", "model.beam_size=2",
         "data.vocab_size=500", "data.max_examples=512", "data.max_tokens=512", "optim.warmup_steps=10",
         "train.steps=2", "train.eval_every=2", "train.checkpoint_every=1", "train.log_every=1",
         "train.plot=false", "train.tensorboard=false"]
EXAMPLES = ["ein mann fährt fahrrad .", "zwei hunde spielen im schnee .",
            "eine frau mit einem roten hut liest ein buch ."]


def overrides(args) -> list[str]:
    """The run's --set overrides: the data directory, for --quick tiny sizes and a run directory beside --out,
    then --set, then --steps."""
    out = [f"data.data_dir={args.data_dir}"] if args.data_dir else []
    if args.quick:
        out += [*QUICK, f"train.workdir={outputs(args).resolve() / 'runs' / PRESET}"]
    out += ["train.progress=false", *args.set]
    return out + ([f"train.steps={args.steps}"] if args.steps else [])


def outputs(args) -> pathlib.Path:
    """The folder beside the results JSON, named after it: hyps/, attention/ (and, for --quick, runs/)."""
    return args.out.parent / args.out.stem


# ------------------------------------------------------------------------------------------------ run bookkeeping


def latest_checkpoint(workdir: pathlib.Path) -> int:
    folder = workdir / "checkpoints"
    return max((int(p.name) for p in folder.iterdir() if p.name.isdigit()), default=0) if folder.is_dir() else 0


def record_session(workdir: pathlib.Path, from_step: int, to_step: int, train_s: float) -> list[dict]:
    """Appends this session to the run's experiment_sessions.json (when it trained a step); returns them all."""
    path = workdir / "experiment_sessions.json"
    sessions = json.loads(path.read_text()) if path.exists() else []
    if to_step > from_step:
        sessions.append({"from_step": from_step, "to_step": to_step, "train_s": round(train_s, 1),
                         "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        path.write_text(json.dumps(sessions, indent=1))
    return sessions


def eval_metrics_at(workdir: pathlib.Path, step: int) -> dict:
    """The evaluation the run logged at `step` (metrics.jsonl), {} if none."""
    path, found = workdir / "metrics.jsonl", {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("split") == "eval" and row.get("step") == step:
                found = {k: v for k, v in row.items() if k not in ("step", "split")}
    return found


def train_run(cfg):
    """`train(cfg)`, recording the session's wall time in the run directory (an interrupted one too)."""
    from lmjax.train import interrupt
    from lmjax.train.loop import train, workdir_for

    workdir = workdir_for(cfg)
    start, t = latest_checkpoint(workdir), time.perf_counter()
    try:
        result = train(cfg)
    except interrupt.Interrupted as e:
        if e.step is not None:
            record_session(workdir, start, e.step, time.perf_counter() - t)
        raise
    sessions = record_session(workdir, result.step - len(result.losses), result.step, time.perf_counter() - t)
    if sessions:
        return result, sum(s["train_s"] for s in sessions), "experiment_sessions.json"
    summary = workdir / "summary.json"  # trained by `lmjax train` alone: its last session's wall time
    wall = json.loads(summary.read_text()).get("wall_s") if summary.exists() else None
    return result, wall, "summary.json (the last training session only)"


def restore_best(cfg):
    """(engine, state, step, which) of the run's best checkpoint by train.best_metric, else its latest."""
    from lmjax.cli import _best_step, _restore  # what `lmjax translate` loads

    best, why = _best_step(cfg)
    engine, state, step = _restore(cfg, need_data=False, step=best)
    if best is None:
        print(f"note: {why}: using the latest checkpoint, step {step}", file=sys.stderr)
    return engine, state, step, why if best is not None else "the latest"


def average_latest(cfg, engine, count: int):
    """(mean parameters of the run's `count` latest checkpoints, their steps): checkpoint averaging, one model whose
    weights are the average of the last few (Vaswani et al. average the last 5 or 20). None when fewer exist."""
    import jax

    from lmjax.train.checkpoint import Checkpointer
    from lmjax.train.loop import workdir_for

    ckpt = Checkpointer(workdir_for(cfg) / "checkpoints", keep=cfg.train.keep_checkpoints, best_metric=None)
    steps = sorted(ckpt.all_steps())[-count:]
    if count < 2 or len(steps) < count:
        ckpt.close()
        return None, steps
    target = engine.abstract_state()
    total = None
    for step in steps:
        _, state, _ = ckpt.restore(target, step=step)
        params = jax.device_get(state.params)
        total = params if total is None else jax.tree.map(lambda a, b: a + b, total, params)
    ckpt.close()
    return jax.tree.map(lambda a: a / len(steps), total), steps


def choose_params(cfg, engine, state, best_step, count: int, corpus) -> tuple[object, dict]:
    """The best checkpoint's parameters or the average of the `count` latest, whichever translates the validation
    split better (greedy BLEU; the test sets play no part in the choice)."""
    from lmjax.models import transformer

    model, tok = engine.task.model, engine.data.tokenizer
    val = corpus.text["validation"]

    def val_bleu(params):
        return transformer.bleu(transformer.translate(model, params, tok, [s for s, _ in val]),
                                [t for _, t in val]).score

    info = {"best_step_valid_bleu": val_bleu(state.params)}
    averaged, steps = average_latest(cfg, engine, count)
    if averaged is None:
        info["chosen"] = f"checkpoint {best_step} (fewer than {count} checkpoints to average)"
        return state.params, info
    info["averaged_steps"] = steps
    info["averaged_valid_bleu"] = val_bleu(averaged)
    if info["averaged_valid_bleu"] > info["best_step_valid_bleu"]:
        info["chosen"] = f"average of checkpoints {steps[0]}..{steps[-1]} ({len(steps)})"
        return averaged, info
    info["chosen"] = f"checkpoint {best_step}"
    return state.params, info


# ------------------------------------------------------------------------------------------------- attention maps


def attention_maps(model, params, tok, sentences: list[str], *, batch_size: int = 64) -> list[dict]:
    """Per sentence: its source, decoder-input and output BPE tokens and {kind: [layers] of [H, rows, cols]}
    weights, teacher-forced on the model's greedy translation (the batch shapes `transformer.translate` compiles)."""
    import numpy as np

    from lmjax.data.translation import encode_lines
    from lmjax.models import transformer

    cfg = model.config
    ids = [x[:cfg.max_len] for x in encode_lines(tok, sentences)]
    width = max(8, -(-max(len(x) for x in ids) // 8) * 8)
    src = np.full((batch_size, width), tok.pad_id, np.int32)
    mask = np.zeros((batch_size, width), bool)
    for r, x in enumerate(ids):
        src[r, :len(x)], mask[r, :len(x)] = x, True
    tokens = np.asarray(transformer.greedy(model, params, src, mask, bos_id=tok.bos_id, eos_id=tok.eos_id,
                                           max_len=transformer.decode_length(model, width)))
    # The decoder reads <bos> + the translation and predicts the translation + <eos>; one that ran out of length
    # without an eos predicts its own last token at its last position instead.
    hyps = [transformer.cut_at_eos(tokens[r], tok.eos_id) for r in range(len(ids))]
    ended = [tok.eos_id in tokens[r].tolist() for r in range(len(ids))]
    inputs = [[tok.bos_id, *(h if e else h[:-1])][:cfg.max_len] for h, e in zip(hyps, ended)]
    t = max(len(x) for x in inputs)
    tgt_in = np.full((len(ids), t), tok.pad_id, np.int32)
    tgt_mask = np.zeros((len(ids), t), bool)
    for r, x in enumerate(inputs):
        tgt_in[r, :len(x)], tgt_mask[r, :len(x)] = x, True
    _, state = model.apply({"params": params}, src[:len(ids)], mask[:len(ids)], tgt_in, tgt_mask,
                           mutable=["intermediates"])
    inter = state["intermediates"]

    def layers(stack: str, attention: str) -> list[np.ndarray]:
        n = cfg.enc_layers if stack == "encoder" else cfg.dec_layers
        return [np.asarray(inter[stack][f"layers_{i}"][attention]["attention_weights"][0]) for i in range(n)]

    found = {"encoder": layers("encoder", "attn"), "decoder_self": layers("decoder", "attn"),
             "cross": layers("decoder", "cross_attn")}
    out = []
    for r, (x, h, y) in enumerate(zip(ids, hyps, inputs)):
        s, n = max(len(x), 1), len(y)  # an empty source keeps one (masked, all-zero) column
        src_tokens = [tok.id_to_token(int(i)) for i in x] or ["(empty)"]
        cut = {"encoder": (s, s), "decoder_self": (n, n), "cross": (n, s)}
        names = [tok.id_to_token(int(i)) for i in h]
        out.append({"source": src_tokens, "inputs": ["<bos>", *names][:n], "outputs": [*names, "<eos>"][:n],
                    "translation": tok.decode(h),
                    "weights": {k: [w[r, :, :cut[k][0], :cut[k][1]] for w in found[k]] for k in KINDS}})
    return out


def draw(path: pathlib.Path, weights, rows: list[str], cols: list[str], title: str, xlabel: str, ylabel: str):
    """One PNG: a subplot per head (4 to a row) of weights [H, rows, cols], 0 white .. 1 black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = weights.shape[0]
    ncols = min(heads, 4)
    nrows = -(-heads // ncols)
    char, cell, top, gap = 0.075, 0.22, 0.5, 0.3  # inches: a label character (7 pt), a token, the title, between
    left, bottom = 0.5 + char * max(map(len, rows)), 0.5 + char * max(map(len, cols))
    w, h = max(cell * len(cols), 0.8), cell * len(rows)
    width, height = max(left + ncols * (w + gap), 4.0), top + nrows * (h + bottom)
    if len(title) > width / 0.07:  # about what fits in 8 pt
        title = title[:int(width / 0.07) - 1] + "…"
    fig = plt.figure(figsize=(width, height))
    for head in range(heads):
        r, c = divmod(head, ncols)
        ax = fig.add_axes(((left + c * (w + gap)) / width, (height - top - (r + 1) * h - r * bottom) / height,
                           w / width, h / height))
        ax.imshow(weights[head], cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
        ax.set_yticks(range(len(rows)), rows if c == 0 else [], fontsize=7)
        ax.set_title(f"head {head}", fontsize=7, pad=2)
        if r == nrows - 1:
            ax.set_xlabel(xlabel, fontsize=7)
        if c == 0:
            ax.set_ylabel(ylabel, fontsize=7)
    fig.text(0.5, 1 - 0.15 / height, title, ha="center", va="top", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_maps(model, params, tok, sentences: list[str], out_dir: pathlib.Path, prefix: str) -> list[str]:
    """The PNGs of `attention_maps` for `sentences`: <prefix>_<i>_<kind>_layer<l>.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = {"encoder": ("source (keys)", "source (queries)", "source", "source"),
              "decoder_self": ("decoder input (keys)", "decoder input (queries)", "inputs", "inputs"),
              "cross": ("source", "predicted target", "outputs", "source")}
    paths = []
    for i, (sentence, m) in enumerate(zip(sentences, attention_maps(model, params, tok, sentences))):
        print(f"{sentence!r} -> {m['translation']!r}", flush=True)
        for kind in KINDS:
            xlabel, ylabel, rows, cols = labels[kind]
            for layer, w in enumerate(m["weights"][kind]):
                path = out_dir / f"{prefix}_{i}_{kind}_layer{layer}.png"
                name = {"encoder": "encoder self-attention", "decoder_self": "decoder masked self-attention",
                        "cross": "cross-attention"}[kind]
                draw(path, w, m[rows], m[cols], f"{name}, layer {layer}: {m['translation']}", xlabel, ylabel)
                paths.append(str(path))
    return paths


# ------------------------------------------------------------------------------------------------------ the run


def count_params(params) -> int:
    import jax

    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def evaluate_run(args) -> dict:
    from lmjax.config import get_preset
    from lmjax.models import transformer

    cfg = get_preset(PRESET, overrides(args))
    result, train_s, train_s_from = train_run(cfg)
    corpus = result.engine.data.info["corpus"]
    engine, state, best_step, which = restore_best(cfg)
    model, tok = engine.task.model, engine.data.tokenizer
    params, selection = choose_params(cfg, engine, state, best_step, args.average, corpus)
    print(f"using {selection['chosen']}: validation BLEU (greedy) {selection}", flush=True)
    lp = model.config.length_penalty
    beam = model.config.beam_size
    folder = outputs(args)
    (folder / "hyps").mkdir(parents=True, exist_ok=True)
    out = {"preset": cfg.name, "steps": result.step, "best_step": best_step, "checkpoint": which,
           "params": count_params(params), "train_s": train_s, "train_s_from": train_s_from, "beam_size": beam,
           "length_penalty": lp, "selection": selection,
           "eval": eval_metrics_at(result.workdir, best_step), "eval_last": result.eval_metrics,
           "padding_fraction": result.engine.data.train(0, 1).padding_fraction(),
           "sacrebleu_signature": transformer.bleu_signature(), "test_sentences": {}, "decode_s": {}}
    hyps_of = {}
    for split, key in SPLITS.items():
        pairs = corpus.text.get(split)
        if pairs is None:
            print(f"note: the dataset has no {split} split: skipped", file=sys.stderr)
            continue
        pairs = pairs[:args.test_sentences or None]
        sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
        out["test_sentences"][split] = len(pairs)
        for mode, size in (("greedy", 0), ("beam", beam)):
            t = time.perf_counter()
            hyps = transformer.translate(model, params, tok, sources, beam_size=size, length_penalty=lp)
            out["decode_s"][f"{split}.{mode}"] = time.perf_counter() - t
            (folder / "hyps" / f"{split}.{mode}.txt").write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
            out[f"bleu_{key}" + ("_greedy" if mode == "greedy" else "")] = transformer.bleu(hyps, refs).score
            hyps_of[split, mode] = hyps
        print(f"{split}: BLEU {out[f'bleu_{key}']:.2f} (beam {beam}), {out[f'bleu_{key}_greedy']:.2f} (greedy), "
              f"{len(pairs)} sentences", flush=True)
    test = corpus.text["test2016"][:args.test_sentences or None]
    t = time.perf_counter()  # compiled now: the decoder's own rate
    transformer.translate(model, params, tok, [s for s, _ in test], beam_size=beam, length_penalty=lp)
    out["sentences_per_s"] = len(test) / (time.perf_counter() - t)
    out["examples"] = [{"source": s, "reference": r, "greedy": hyps_of["test2016", "greedy"][i],
                        "beam": hyps_of["test2016", "beam"][i]} for i, (s, r) in enumerate(test[:5])]
    out["hyps"] = str(folder / "hyps")
    out["attention_maps"] = write_maps(model, params, tok, [s for s, _ in test[:3]], folder / "attention",
                                       "test2016")
    print(json.dumps({k: v for k, v in out.items() if k not in ("examples", "attention_maps")}, indent=1))
    return out


def speed_keys() -> dict:
    """tokens_per_s, torch_tokens_per_s, speedup (and decode_speedup) from the side-by-side benchmark's results, when
    it has run (`python benchmarks/transformer_vs_torch.py --decode-from runs/multi30k_transformer`)."""
    path = ROOT / "benchmarks/results/transformer_vs_torch.json"
    if not path.exists():
        return {}
    bench = json.loads(path.read_text())
    out = {k: bench[k] for k in ("tokens_per_s", "torch_tokens_per_s", "speedup", "decode_speedup") if k in bench}
    return out | {"speed_from": f"benchmarks/results/transformer_vs_torch.json ({bench.get('date', '')})"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", default="train", choices=("train", "maps"),
                   help="train (resumes), translate the test sets and draw maps; or only draw maps of --sentences")
    p.add_argument("--average", type=int, default=5, help="also try the average of the N latest checkpoints and "
                                                          "keep it if its validation BLEU is higher (< 2: never)")
    p.add_argument("--steps", type=int, default=0, help="train to this step (0 = the preset's train.steps)")
    p.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--sentences", nargs="*", default=EXAMPLES, help="maps: German sources, tokenised and lowercased")
    p.add_argument("--data-dir", default=None, help="raw datasets laid out like shared/data (default "
                                                    "$LMJAX_DATA_DIR)")
    p.add_argument("--test-sentences", type=int, default=0, help="translate only the first N of each test set "
                                                                 "(0 = all)")
    p.add_argument("--quick", action="store_true", help="a smoke run: a 2+2-layer 32-wide model, 2 steps, beam 2, "
                                                        "20 sentences per test set, run directory beside --out")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments/results/multi30k_transformer.json",
                   help="results JSON; hyps/ and attention/ go to the folder of its name beside it")
    args = p.parse_args()
    if args.quick:
        args.test_sentences = args.test_sentences or 20

    from lmjax.runtime import use_ynn_fusion

    use_ynn_fusion()

    if args.command == "maps":
        from lmjax.config import get_preset
        from lmjax.train.checkpoint import CheckpointError
        from lmjax.train.rundir import has_checkpoint, workdir_for

        cfg = get_preset(PRESET, overrides(args))
        if not has_checkpoint(workdir_for(cfg) / "checkpoints"):
            raise CheckpointError(f"no checkpoint under {workdir_for(cfg) / 'checkpoints'}: train it first, with "
                                  "python experiments/multi30k_transformer.py and the same --quick/--set/--out")
        engine, state, step, which = restore_best(cfg)
        print(f"checkpoint step {step} ({which})", file=sys.stderr)
        write_maps(engine.task.model, state.params, engine.data.tokenizer, args.sentences,
                   outputs(args) / "attention", "sentence")
        return

    from lmjax.results import write_results

    write_results(args.out, {**evaluate_run(args), **speed_keys()})


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
