"""The transfer table: every way of reusing a pre-trained model, measured on the same tasks with the same small
downstream model (a one-layer BiLSTM and a linear head, `lmjax.models.transfer`).

    python experiments/transfer.py [--tasks sst2 sst2_2k rte upos chunk] [--rows random word2vec ...]
                                   [--seeds 0 1 2] [--elmo DIR] [--bert DIR] [--gpt DIR] [--vectors FILE]
    python experiments/transfer.py --quick --out /tmp/transfer_quick.json     # a seconds-long smoke check

Rows (`lmjax.models.transfer.ROWS`): random (a word table trained on the task alone), word2vec (vectors from
`lmjax word2vec train --corpus imdb`, frozen) and word2vec_ft (fine-tuned), elmo (the frozen biLM's three layers
through a learned scalar mix), gpt / bert (the frozen pre-trained trunk's last layer at each word) and gpt_ft /
bert_ft (the trunk fine-tuned with the task). Every pre-trained model saw the IMDB reviews only, none of the tasks'
text. Tasks: SST-2 (all 67k sentences, and the first 2,000: `sst2_2k`), RTE, UD English EWT UPOS, CoNLL-2000
chunking; scores: dev accuracy (SST-2, RTE), test accuracy per word (UPOS), test phrase F1 (chunking).

Every run is a preset `transfer_<task>_<row>` with `--set train.seed=K --set data.seed=K`, in
runs/transfer/<task>_<row>_s<K> (resumed when interrupted); a run already in the results file (same task, row, seed
and steps, no --set) is kept, not trained again, so the table fills in across sessions. A row whose pre-trained model
is missing is skipped and named. Writes experiments/results/
transfer_table.json (`<task>_<row>_mean`, `_std` (ddof=1), `_n`, each row's pre-training tokens and mean
fine-tuning wall time, every run) and the plot experiments/results/transfer_table.png.
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


def portable_path(path) -> str:
    """`path` as results files write it (`lmjax.results.portable`: repository-relative, $TMPDIR, ...)."""
    from lmjax.results import portable

    return portable(str(pathlib.Path(path).absolute()))


TASKS = ("sst2", "sst2_2k", "rte", "upos", "chunk")
ROWS = ("random", "word2vec", "word2vec_ft", "elmo", "gpt", "gpt_ft", "bert", "bert_ft")
SCORES = {"sst2": ("validation", "eval_accuracy"), "sst2_2k": ("validation", "eval_accuracy"),
          "rte": ("validation", "eval_accuracy"), "upos": ("test", "eval_accuracy"), "chunk": ("test", "eval_f1")}
# Published figures beside the table (different models and budgets: context, not targets). GLUE figures are test
# sets (ours: dev). Devlin et al. (2019), Table 1; Peters et al. (2017, TagLM), CoNLL-2000 with LM embeddings.
ANCHORS = {
    "sst2": {"BiLSTM+ELMo+Attn (GLUE)": 0.904, "OpenAI GPT": 0.913, "BERT-Base": 0.935},
    "rte": {"BiLSTM+ELMo+Attn (GLUE)": 0.568, "OpenAI GPT": 0.560, "BERT-Base": 0.664},
    "chunk": {"TagLM (Peters et al. 2017)": 0.9637},
}
PRETRAIN_RESULTS = {"elmo": "experiments/results/elmo_pretrain.json", "bert": "experiments/results/bert_pretrain.json"}
QUICK = ["model.hidden=8", "data.max_examples=64", "data.batch_size=8", "train.steps=6", "train.eval_every=6",
         "train.checkpoint_every=6", "optim.warmup_steps=1", "model.embed_dim=16"]


def plot_table(report: dict, tasks, rows, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.8), squeeze=False)
    colors = plt.get_cmap("tab10")
    for ax, task in zip(axes[0], tasks):
        shown = [r for r in rows if f"{task}_{r}_mean" in report]
        means = [100 * report[f"{task}_{r}_mean"] for r in shown]
        stds = [100 * report[f"{task}_{r}_std"] for r in shown]
        ax.bar(range(len(shown)), means, yerr=stds, color=[colors(ROWS.index(r)) for r in shown], capsize=3)
        for name, value in ANCHORS.get(task, {}).items():  # sst2_2k has none: they trained on all of SST-2
            ax.axhline(100 * value, ls="--", lw=0.8, color="gray")
            ax.text(len(shown) - 0.5, 100 * value, name, fontsize=6, ha="right", va="bottom", color="gray")
        ax.set_xticks(range(len(shown)), shown, rotation=60, fontsize=7)
        low = min(means, default=0)
        ax.set_ylim(max(0, low - 10), 100)
        ax.set_title(f"{task} ({SCORES[task][1].removeprefix('eval_')}, {SCORES[task][0]})", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("transfer: the same BiLSTM over each encoder (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", nargs="+", default=None, choices=TASKS, help="default: all (--quick: rte chunk)")
    p.add_argument("--rows", nargs="+", default=None, choices=ROWS, help="default: all (--quick: random elmo)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="default: 0 1 2, and 0-4 for RTE (--quick: 0)")
    p.add_argument("--elmo", default="runs/elmo_imdb", help="the ELMo pre-training run (or an export of it)")
    p.add_argument("--bert", default="runs/bert_imdb_mini",
                   help="the BERT pre-training run, or its export (experiments/pretrained/bert_imdb_mini)")
    p.add_argument("--gpt", default="runs/gpt_imdb", help="the GPT pre-training run (or an export of it)")
    p.add_argument("--vectors", default="runs/word2vec_imdb/vectors.bin",
                   help="word2vec vectors of the IMDB reviews (trained here when missing)")
    p.add_argument("--set", action="append", default=[], help="override for every run (repeatable)")
    p.add_argument("--data-dir", default=os.environ.get("LMJAX_DATA_DIR", ""),
                   help="raw datasets laid out like shared/data (default $LMJAX_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and step counts: a smoke check")
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args()
    if not args.data_dir:
        sys.exit("error: the datasets are read from a local directory: pass --data-dir DIR or set LMJAX_DATA_DIR "
                 "(laid out like shared/data)")
    tasks = args.tasks or (["rte", "chunk"] if args.quick else list(TASKS))
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    rows = args.rows or (["random", "elmo"] if args.quick else list(ROWS))

    from lmjax.runtime import reexec_with_tcmalloc, use_ynn_fusion

    use_ynn_fusion()
    reexec_with_tcmalloc([sys.executable, *sys.argv])

    from lmjax.config import get_preset
    from lmjax.results import write_results
    from lmjax.train.loop import train
    from lmjax.train.rundir import has_checkpoint

    runs = ROOT / "runs" / ("transfer_quick" if args.quick else "transfer")
    common = [f"data.data_dir={args.data_dir}", "train.progress=false", "train.tensorboard=false"]
    sources = {"elmo": ROOT / args.elmo, "bert": ROOT / args.bert, "gpt": ROOT / args.gpt}
    if args.quick:  # a tiny ELMo pre-trained now stands in for the real one
        sources["elmo"] = runs / "elmo"
        train(get_preset("elmo_smoke", [*common, f"train.workdir={sources['elmo']}", "train.eval_every=0"]))
    vectors = ROOT / args.vectors
    if any(r.startswith("word2vec") for r in rows) and not vectors.is_file():
        from lmjax.models import word2vec

        print(f"training word2vec vectors of the IMDB reviews into {portable_path(vectors)}", flush=True)
        vectors.parent.mkdir(parents=True, exist_ok=True)
        extra = ["--epochs", "1", "--dim", "32"] if args.quick else []
        if word2vec.main(["train", "--corpus", "imdb", "--data-dir", args.data_dir, "--out", str(vectors), *extra]):
            sys.exit("error: word2vec training failed (see above)")

    out = args.out or ROOT / "experiments/results/transfer_table.json"
    # Runs already in the results file (committed, unlike runs/) are kept, not trained again: the table fills in
    # across sessions. A run is the same when its task, row, seed and step count are.
    kept = json.loads(out.read_text(encoding="utf-8")).get("runs", []) if out.is_file() and not args.quick else []
    done = {(r["task"], r["row"], r["seed"], r["steps"]): r for r in kept}
    t_start = time.perf_counter()
    results, missing = [], {}
    for task in tasks:
        seeds = args.seeds if task != "rte" or len(args.seeds) != 3 else [*args.seeds, max(args.seeds) + 1,
                                                                          max(args.seeds) + 2]
        split, metric = SCORES[task]
        for row in rows:
            encoder = row.removesuffix("_ft")
            source = sources.get(encoder)
            if source is not None and not has_checkpoint(source / "checkpoints"):
                missing[row] = f"no checkpoint in {portable_path(source)}: pre-train it first"
                print(f"{task:>7} {row:>11}: skipped ({missing[row]})", flush=True)
                continue
            for seed in seeds:
                preset = f"transfer_{task}_{row}"
                overrides = [*common, f"train.workdir={runs / f'{task}_{row}_s{seed}'}", f"train.seed={seed}",
                             f"data.seed={seed}"]
                if source is not None:
                    overrides.append(f"train.init_from={source}")
                if encoder == "word2vec":
                    overrides.append(f"model.vectors={vectors}")
                if args.quick:
                    overrides += QUICK + (["model.elmo_preset=elmo_smoke"] if encoder == "elmo" else [])
                cfg = get_preset(preset, [*overrides, *args.set])
                if (task, row, seed, cfg.train.steps) in done and not args.set:
                    run = done.pop((task, row, seed, cfg.train.steps))
                    print(f"{task:>7} {row:>11} seed {seed}: {split} {metric} {run['score']:.4f} (in {out.name})",
                          flush=True)
                    results.append(run)
                    continue
                t0 = time.perf_counter()
                result = train(cfg)
                score = result.engine.evaluate(result.state.params, split=split, max_batches=None)
                wall = [json.loads(x).get("wall_s") for x in (result.workdir / "metrics.jsonl").read_text()
                        .splitlines() if '"split": "train"' in x]
                run = {"task": task, "row": row, "seed": seed, "score": score[metric], "split": split,
                       "metric": metric, "steps": cfg.train.steps, "train_loss_last": result.train_loss,
                       "wall_s": wall[-1] if wall and wall[-1] else time.perf_counter() - t0,
                       "command": f"lmjax train {preset} --set train.seed={seed} --set data.seed={seed}"}
                print(f"{task:>7} {row:>11} seed {seed}: {split} {metric} {run['score']:.4f} ({run['wall_s']:.0f} s)",
                      flush=True)
                results.append(run)

    results += done.values()  # runs of other tasks, rows or seeds stay in the table
    tasks = [t for t in TASKS if t in tasks or any(r["task"] == t for r in results)]
    rows = [r for r in ROWS if r in rows or any(x["row"] == r for x in results)]
    report: dict = {}
    for task in tasks:
        for row in rows:
            scores = np.array([r["score"] for r in results if r["task"] == task and r["row"] == row])
            if len(scores):
                report[f"{task}_{row}_mean"] = float(scores.mean())
                report[f"{task}_{row}_std"] = float(scores.std(ddof=1)) if len(scores) > 1 else 0.0
                report[f"{task}_{row}_n"] = int(len(scores))
    compute = {}
    for row in rows:
        walls = [r["wall_s"] for r in results if r["row"] == row]
        encoder = row.removesuffix("_ft")
        tokens = None
        if encoder in PRETRAIN_RESULTS and (ROOT / PRETRAIN_RESULTS[encoder]).is_file() and not args.quick:
            tokens = json.loads((ROOT / PRETRAIN_RESULTS[encoder]).read_text()).get("tokens_seen")
        compute[row] = {"pretrain_tokens": 0 if encoder == "random" else tokens,
                        "finetune_wall_s_mean": float(np.mean(walls)) if walls else None}
    report |= {"scores": {t: f"{SCORES[t][1].removeprefix('eval_')} on {SCORES[t][0]}" for t in tasks},
               "std": "sample standard deviation over seeds (ddof=1)", "compute": compute, "missing": missing,
               "anchors": ANCHORS, "runs": results, "wall_s": time.perf_counter() - t_start}
    plot = out.with_suffix(".png")
    plot_table(report, tasks, rows, plot)
    report["plot"] = portable_path(plot)
    print(f"\n{'task':>7} " + " ".join(f"{r:>11}" for r in rows))
    for task in tasks:
        cells = [f"{100 * report[f'{task}_{r}_mean']:6.2f}±{100 * report[f'{task}_{r}_std']:4.2f}"
                 if f"{task}_{r}_mean" in report else f"{'-':>11}" for r in rows]
        print(f"{task:>7} " + " ".join(cells))
    write_results(out, report, command="python experiments/transfer.py " + " ".join(sys.argv[1:]))
    print(f"wrote {portable_path(out)} and {portable_path(plot)}")


if __name__ == "__main__":
    main()
