"""BERT pre-trained on IMDB here, then fine-tuned on SST-2, RTE, UD English EWT UPOS and CoNLL-2000 chunking, in four
regimes: from scratch, frozen encoder (a head on it), bottom half frozen, fully fine-tuned.

    python experiments/bert_imdb.py [--pretrain-steps N] [--tasks sst2 rte upos chunk] [--regimes ...]
                                    [--seeds 0 1 2] [--set KEY=VALUE ...] [--out PATH]
    python experiments/bert_imdb.py --quick --out /tmp/bert_quick.json      # a seconds-long smoke check

Every run is a preset of the engine; the script only runs them and collects the table:

1. `lmjax train bert_imdb_mini` (runs/bert_imdb_mini): BERT-Mini (4 x 256) pre-trained with MLM + NSP on the 50,000
   IMDB reviews, resumed where it stopped. `--pretrain-steps N` runs at most N more steps in this invocation (the
   schedule stays the preset's, so the run continues where it left off next time); 0 fine-tunes the checkpoint as
   it is. The MLM and NSP accuracy curves go to experiments/results/bert_pretrain.png.
2. For each task, regime and seed (`--set train.seed=K --set data.seed=K`; RTE gets 5 seeds when 3 are given),
   `lmjax train bert_<task>_<regime>` in runs/bert_imdb/<task>_<regime>_s<K>, then the final model's score:
   SST-2 and RTE dev accuracy, UPOS test accuracy (per word), chunking test F1 (conlleval phrases). No checkpoint
   selection. A finished run is read back, not trained again.
3. Writes experiments/results/bert_pretrain.json (mlm_acc, nsp_acc on the held-out reviews, tokens_seen,
   corpus_words, params, wall_s, whether the run finished) and experiments/results/bert_finetune.json
   (`<task>_<regime>_mean` and `_std`, sample std with ddof=1, and every run).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
TASKS = ("sst2", "rte", "upos", "chunk")
REGIMES = ("scratch", "frozen", "partial", "finetune")
# The reported score per task: (split, metric)
SCORES = {"sst2": ("validation", "eval_accuracy"), "rte": ("validation", "eval_accuracy"),
          "upos": ("test", "eval_accuracy"), "chunk": ("test", "eval_f1")}
QUICK_MODEL = ["model.layers=2", "model.hidden=32", "model.heads=2", "model.intermediate=64"]
QUICK_PRETRAIN = [*QUICK_MODEL, "data.vocab_size=512", "data.max_examples=300", "data.batch_size=8",
                  "data.seq_len=64", "train.steps=20", "train.eval_every=10", "train.checkpoint_every=10",
                  "train.eval_batches=2", "optim.warmup_steps=2", "train.steps_per_call=1"]
QUICK_FINETUNE = [*QUICK_MODEL, "data.max_examples=64", "data.batch_size=8", "train.steps=8", "train.eval_every=8",
                  "train.checkpoint_every=8", "optim.warmup_steps=1"]


def relative(path: pathlib.Path) -> str:
    path = pathlib.Path(path).absolute()
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)


def plot_pretraining(metrics: pathlib.Path, out: pathlib.Path) -> None:
    """MLM and NSP accuracy, train (logged) and held out, against the step, from the run's metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, title in ((axes[0], "mlm_accuracy", "masked LM accuracy"),
                           (axes[1], "nsp_accuracy", "next-sentence accuracy")):
        train = [(r["step"], r[key]) for r in rows if r.get("split") == "train" and key in r]
        held = [(r["step"], r[f"eval_{key}"]) for r in rows if f"eval_{key}" in r]
        if train:
            steps, values = zip(*train)
            window = max(1, len(values) // 50)
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1:], smooth, label="train (smoothed)", alpha=0.8)
        if held:
            ax.plot(*zip(*held), "o-", label="held-out reviews")
        ax.set_xlabel("step (64 x 128 positions)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-steps", type=int, default=None,
                   help="at most this many more pre-training steps now (default: to the preset's end; 0: none)")
    p.add_argument("--tasks", nargs="+", default=None, choices=TASKS, help="default: all (--quick: rte chunk)")
    p.add_argument("--regimes", nargs="+", default=None, choices=REGIMES,
                   help="default: all (--quick: frozen finetune)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="default: 0 1 2, and 0-4 for RTE (--quick: 0)")
    p.add_argument("--task-steps", nargs="+", default=[], metavar="TASK=N",
                   help="fine-tuning steps of a task instead of its preset's (warmup: 10%% of them)")
    p.add_argument("--set", action="append", default=[], help="override for every fine-tuning preset (repeatable)")
    p.add_argument("--pretrain-set", action="append", default=[], help="override for bert_imdb_mini (repeatable)")
    p.add_argument("--pretrained", type=pathlib.Path, default=None, metavar="DIR",
                   help="fine-tune from this pre-trained directory (a run, or one `lmjax export` wrote, such as "
                        "experiments/pretrained/bert_imdb_mini) instead of pre-training: implies --pretrain-steps 0")
    p.add_argument("--data-dir", default=os.environ.get("LMJAX_DATA_DIR", ""),
                   help="raw datasets laid out like shared/data (default $LMJAX_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and step counts: a smoke check")
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args()
    task_steps = {}
    for item in args.task_steps:
        name, _, n = item.partition("=")
        if name not in TASKS or not n.isdigit() or int(n) < 1:
            sys.exit(f"error: --task-steps {item!r}: write TASK=N with TASK one of {', '.join(TASKS)} and N >= 1")
        task_steps[name] = int(n)
    args.tasks = args.tasks or (["rte", "chunk"] if args.quick else list(TASKS))
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.regimes = args.regimes or (["frozen", "finetune"] if args.quick else list(REGIMES))
    if not args.data_dir:
        sys.exit("error: the datasets are read from a local directory: pass --data-dir DIR or set LMJAX_DATA_DIR "
                 "(laid out like shared/data)")

    from lmjax.runtime import reexec_with_tcmalloc, use_ynn_fusion

    use_ynn_fusion()
    reexec_with_tcmalloc([sys.executable, *sys.argv])
    import jax

    from lmjax.config import get_preset
    from lmjax.results import write_results
    from lmjax.train.loop import train
    from lmjax.train.pretrained import load_params

    runs = ROOT / "runs" / ("bert_imdb_quick" if args.quick else "bert_imdb")
    pre_dir = ROOT / "runs" / ("bert_imdb_mini_quick" if args.quick else "bert_imdb_mini")
    if args.pretrained:
        pre_dir, args.pretrain_steps = args.pretrained.resolve(), 0
        if not (pre_dir / "checkpoints").is_dir():
            sys.exit(f"error: --pretrained {args.pretrained}: no checkpoints/ there (a run directory, or one "
                     "`lmjax export RUN OUT` wrote)")
    common = [f"data.data_dir={args.data_dir}", "train.progress=false"]
    t_start = time.perf_counter()

    pre_cfg = get_preset("bert_imdb_mini", [*common, f"train.workdir={pre_dir}",
                                            *(QUICK_PRETRAIN if args.quick else []), *args.pretrain_set])
    if args.pretrain_steps != 0:
        print(f"pre-training (or resuming) {relative(pre_dir)}", flush=True)
        pre = train(pre_cfg, stop_after=args.pretrain_steps)
        data = pre.engine.data
    else:
        data = None
    corpus_file = pre_dir / "corpus.json"
    if not corpus_file.is_file():
        if data is None:  # the corpus figures of a run trained by `lmjax train`: build its data once more
            from lmjax.data import load_tokenizer
            from lmjax.data.bert_tasks import pretraining_data

            data = pretraining_data(pre_cfg, load_tokenizer(pre_dir / "tokenizer"))
        info = data.info
        corpus_file.write_text(json.dumps({k: info[k] for k in ("words", "documents", "train_documents",
                                                                 "train_instances", "eval_instances", "fill")}))
    corpus = json.loads(corpus_file.read_text())
    pre_step, encoder = load_params(pre_dir)
    metrics = pre_dir / "metrics.jsonl"
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    evals = [x for x in lines if "eval_mlm_accuracy" in x]
    last_eval = evals[-1] if evals else {}
    walls = [x["wall_s"] for x in lines if x.get("split") == "train" and "wall_s" in x]
    plot = (args.out.with_suffix(".png") if args.quick and args.out else
            ROOT / "experiments/results" / ("bert_imdb_pretrain_quick.png" if args.quick else "bert_pretrain.png"))
    plot_pretraining(metrics, plot)
    positions = pre_step * pre_cfg.data.batch_size * pre_cfg.data.seq_len
    params = int(sum(np.size(x) for x in jax.tree_util.tree_leaves(encoder)))
    pretrain = {
        "preset": "bert_imdb_mini", "step": pre_step, "steps_planned": pre_cfg.train.steps,
        "finished": pre_step >= pre_cfg.train.steps, "mlm_acc": last_eval.get("eval_mlm_accuracy"),
        "nsp_acc": last_eval.get("eval_nsp_accuracy"), "mlm_loss": last_eval.get("eval_mlm_loss"),
        "eval_step": last_eval.get("step"), "positions_seen": positions,
        "tokens_seen": int(round(positions * corpus["fill"])), "corpus_words": corpus["words"],
        "corpus_documents": corpus["documents"], "train_instances": corpus["train_instances"],
        "eval_instances": corpus["eval_instances"], "params": params,
        "wall_s": walls[-1] if walls else None,  # the run's time across resumes, as its log records it
        "plot": relative(plot), "workdir": relative(pre_dir),
    }
    print(f"pre-trained: step {pre_step} ({positions:,} positions), held-out MLM accuracy "
          f"{pretrain['mlm_acc'] or float('nan'):.4f}, NSP {pretrain['nsp_acc'] or float('nan'):.4f}", flush=True)
    if args.out:
        pre_out = args.out.with_name(args.out.stem + "_pretrain.json")
    else:
        pre_out = runs.with_name(runs.name + "_pretrain.json") if args.quick else \
            ROOT / "experiments/results/bert_pretrain.json"
    write_results(pre_out, pretrain, command="python experiments/bert_imdb.py " + " ".join(sys.argv[1:]))
    print(f"wrote {pre_out}")

    results = []
    for task in args.tasks:
        seeds = args.seeds if task != "rte" or len(args.seeds) != 3 else [*args.seeds, max(args.seeds) + 1,
                                                                          max(args.seeds) + 2]
        split, metric = SCORES[task]
        for regime in args.regimes:
            for seed in seeds:
                preset = f"bert_{task}_{regime}"
                workdir = runs / f"{task}_{regime}_s{seed}"
                overrides = [*common, f"train.workdir={workdir}", "train.tensorboard=false", f"train.seed={seed}",
                             f"data.seed={seed}", f"data.tokenizer_dir={pre_dir / 'tokenizer'}",
                             *(QUICK_FINETUNE if args.quick else []), *args.set]
                if task in task_steps:
                    n = task_steps[task]
                    overrides += [f"train.steps={n}", f"optim.warmup_steps={n // 10}", f"train.eval_every={n}",
                                  f"train.checkpoint_every={n}"]
                if get_preset(preset).train.init_from:
                    overrides.append(f"train.init_from={pre_dir}")
                cfg = get_preset(preset, overrides)
                t0 = time.perf_counter()
                result = train(cfg)
                params = result.state.params
                score = result.engine.evaluate(params, split=split, max_batches=None)
                run = {"task": task, "regime": regime, "seed": seed, "score": score[metric], "split": split,
                       "steps": cfg.train.steps,
                       "metric": metric, "train_loss_last": result.train_loss,
                       "wall_s": time.perf_counter() - t0, "pretrain_step": pre_step if cfg.train.init_from else 0,
                       "command": f"lmjax train {preset} --set train.seed={seed} --set data.seed={seed}"}
                if "eval_accuracy" in score:
                    run["accuracy"] = score["eval_accuracy"]
                if regime == "frozen":  # the engine's freezing, checked: the encoder is the pre-trained one
                    got = jax.device_get(params["bert"])
                    run["encoder_unchanged"] = all(
                        np.array_equal(np.asarray(encoder["bert"][k_]), np.asarray(got[k_]))
                        for k_ in ("tok_embed", "pos_embed", "seg_embed"))
                    if not run["encoder_unchanged"]:
                        raise RuntimeError(f"{preset} seed {seed}: the frozen encoder changed during training")
                print(f"{task:>5} {regime:>8} seed {seed}: {split} {metric} {run['score']:.4f} "
                      f"({run['wall_s']:.0f} s)", flush=True)
                results.append(run)

    report = {}
    for task in args.tasks:
        for regime in args.regimes:
            scores = np.array([r["score"] for r in results if r["task"] == task and r["regime"] == regime])
            report[f"{task}_{regime}_mean"] = float(scores.mean())
            report[f"{task}_{regime}_std"] = float(scores.std(ddof=1)) if len(scores) > 1 else 0.0
            report[f"{task}_{regime}_n"] = int(len(scores))
    report |= {
        "scores": {t: f"{SCORES[t][1].removeprefix('eval_')} on {SCORES[t][0]}" for t in args.tasks},
        "std": "sample standard deviation over seeds (ddof=1)",
        "pretrain_step": pre_step, "pretrain_finished": pretrain["finished"], "pretrain_results": relative(pre_out),
        "runs": results, "wall_s": time.perf_counter() - t_start,
    }
    print(f"\n{'task':>5} {'regime':>8}  score (mean ± std, n)")
    for task in args.tasks:
        for regime in args.regimes:
            print(f"{task:>5} {regime:>8}  {report[f'{task}_{regime}_mean']:.4f} ± {report[f'{task}_{regime}_std']:.4f}"
                  f" ({report[f'{task}_{regime}_n']})")
    out = args.out or (runs.with_suffix(".json") if args.quick else ROOT / "experiments/results/bert_finetune.json")
    write_results(out, report, command="python experiments/bert_imdb.py " + " ".join(sys.argv[1:]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
