"""GPT-1-style transfer on SST-2 from presets: from scratch, a frozen pretrained trunk, and full fine-tuning.

    python experiments/gpt_sst2_finetune.py [--seeds 0 1 2] [--set KEY=VALUE ...] [--out PATH]
    python experiments/gpt_sst2_finetune.py --quick --out /tmp/sst2_quick.json      # a seconds-long smoke check

Every run is a preset of the engine; the script only runs them and collects the table:

1. `lmjax train gpt_imdb`: GPT-1's pretraining in miniature (4 layers x 256, context 128, a lowercasing WordPiece of
   8,192 pieces fitted on the IMDB train reviews, each review preceded by [SEP]; 2,000 steps) in runs/gpt_imdb. An
   existing run there resumes, or is reused when finished.
2. For seeds 0, 1, 2 (`--set train.seed=K --set data.seed=K`), in runs/gpt_sst2_finetune/<setting>_s<K>:
     `lmjax train sst2_scratch`   the same architecture and tokenizer, random init, dropout 0.1, lr 3e-4
     `lmjax train sst2_frozen`    train.init_from=runs/gpt_imdb, optim.freeze=^gpt/ (a linear probe), lr 1e-2
     `lmjax train sst2_finetune`  train.init_from=runs/gpt_imdb, everything trained, L = L_cls + 0.5 L_lm, lr 1e-4
   each 300 steps of AdamW on the first 2,000 SST-2 train sentences, batch 32 ([SEP] sentence [SEP], the head on
   the last [SEP]), then accuracy on the whole dev set (872 sentences; no early stopping or selection).
3. Writes experiments/results/gpt_sst2_finetune.json: mean and sample std (ddof=1) of dev accuracy per setting, and
   every run (dev and train accuracy, that the frozen trunk came out bit-identical to the pretrained one).
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
SETTINGS = ("scratch", "frozen", "finetune")
# --quick: a 1-layer, 32-wide model on the first 2,000 reviews and 64 sentences, a few steps each.
QUICK_MODEL = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=64", "data.seq_len=64"]
QUICK_PRETRAIN = [*QUICK_MODEL, "data.vocab_size=1024", "data.max_examples=2000", "data.batch_size=8",
                  "train.steps=20", "train.eval_every=20", "train.eval_batches=2", "train.checkpoint_every=20",
                  "train.sample_tokens=0", "optim.warmup_steps=2", "train.resume=false"]
QUICK_FINETUNE = [*QUICK_MODEL, "data.max_examples=64", "data.batch_size=8", "train.steps=8", "train.eval_every=8",
                  "optim.warmup_steps=1"]


def relative(path: pathlib.Path) -> str:
    path = pathlib.Path(path).absolute()
    return os.path.relpath(path, ROOT) if path.is_relative_to(ROOT) else str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (--quick: 0)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    p.add_argument("--set", action="append", default=[], help="override for the fine-tuning presets (repeatable)")
    p.add_argument("--pretrain-set", action="append", default=[], help="override for gpt_imdb (repeatable)")
    p.add_argument("--data-dir", default=os.environ.get("LMJAX_DATA_DIR", ""),
                   help="raw datasets laid out like shared/data (default $LMJAX_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and step counts: a smoke check")
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args()
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    if not args.data_dir:
        sys.exit("error: IMDB and SST-2 are read from a local directory: pass --data-dir DIR or set LMJAX_DATA_DIR "
                 "(laid out like shared/data, with imdb/ and sst2/)")

    from lmjax.runtime import reexec_with_tcmalloc, use_ynn_fusion

    use_ynn_fusion()  # what `lmjax train` does on CPU, before JAX starts its backend
    reexec_with_tcmalloc([sys.executable, *sys.argv])
    import jax

    from lmjax.config import get_preset
    from lmjax.train.loop import train
    from lmjax.train.pretrained import load_params

    runs = ROOT / "runs" / ("gpt_sst2_finetune_quick" if args.quick else "gpt_sst2_finetune")
    pre_dir = ROOT / "runs" / ("gpt_imdb_quick" if args.quick else "gpt_imdb")
    common = [f"data.data_dir={args.data_dir}", "train.progress=false"]
    t_start = time.perf_counter()

    pre_cfg = get_preset("gpt_imdb", [*common, f"train.workdir={pre_dir}", *(QUICK_PRETRAIN if args.quick else []),
                                      *args.pretrain_set])
    print(f"pretraining (or resuming) {relative(pre_dir)}", flush=True)
    pre = train(pre_cfg)
    print(f"pretrained: step {pre.step}, eval loss {pre.eval_loss:.4f}", flush=True)
    _, trunk = load_params(pre_dir)

    results = []
    for setting in args.settings:
        for seed in args.seeds:
            workdir = runs / f"{setting}_s{seed}"
            overrides = [*common, f"train.workdir={workdir}", "train.resume=false", "train.tensorboard=false",
                         f"train.seed={seed}", f"data.seed={seed}", f"data.tokenizer_dir={pre_dir / 'tokenizer'}",
                         *(QUICK_FINETUNE if args.quick else []), *args.set]
            cfg = get_preset(f"sst2_{setting}", overrides)
            if cfg.train.init_from:
                cfg = get_preset(f"sst2_{setting}", [*overrides, f"train.init_from={pre_dir}"])
            result = train(cfg)
            params = result.state.params
            fit = result.engine.evaluate(params, split="train", max_batches=None)
            run = {"setting": setting, "seed": seed, "dev_acc": result.eval_metrics["eval_accuracy"],
                   "dev_loss": result.eval_metrics["eval_cls_loss"], "train_acc": fit["eval_accuracy"],
                   "train_loss_last": result.train_loss, "wall_s": result.wall_s,
                   "command": f"lmjax train sst2_{setting} --set train.seed={seed} --set data.seed={seed}"}
            if cfg.optim.freeze:  # the engine's freezing, checked: the trunk is the pretrained one
                run["trunk_unchanged"] = all(np.array_equal(a, b) for a, b in zip(
                    jax.tree.leaves(trunk), jax.tree.leaves(jax.device_get(params["gpt"]))))
                if not run["trunk_unchanged"]:
                    raise RuntimeError(f"{setting} seed {seed}: the frozen trunk changed during training")
            print(f"{setting:>9} seed {seed}: dev acc {run['dev_acc']:.4f}, train acc {run['train_acc']:.4f}, "
                  f"{result.wall_s:.0f} s", flush=True)
            results.append(run)
            info = result.engine.data.info

    report = {}
    for setting in args.settings:
        accs = np.array([r["dev_acc"] for r in results if r["setting"] == setting])
        report[f"{setting}_acc_mean"] = float(accs.mean())
        report[f"{setting}_acc_std"] = float(accs.std(ddof=1)) if len(accs) > 1 else 0.0
    report |= {
        "presets": ["gpt_imdb", *(f"sst2_{s}" for s in args.settings)],
        "std": "sample standard deviation over seeds (ddof=1)",
        "seeds": args.seeds,
        "dev_size": info["eval_size"],
        "train_size": info["train_size"],
        "majority_dev_acc": info["majority_eval_accuracy"],
        "finetune_steps": cfg.train.steps,
        "batch_size": cfg.data.batch_size,
        # The pretraining run's own summary (an invocation that only resumed a finished run times nothing).
        "pretrain": {"preset": "gpt_imdb", **pre.summary(), **json.loads((pre_dir / "summary.json").read_text()),
                     "workdir": relative(pre_dir),
                     "vocab_size": pre.engine.data.vocab_size},
        "runs": results,
        "wall_s": time.perf_counter() - t_start,
    }
    print(f"\n{'setting':>9}  dev accuracy (mean ± std over {len(args.seeds)} seeds)  per seed")
    for setting in args.settings:
        per_seed = " ".join(f"{r['dev_acc']:.4f}" for r in results if r["setting"] == setting)
        print(f"{setting:>9}  {report[f'{setting}_acc_mean']:.4f} ± {report[f'{setting}_acc_std']:.4f}"
              f"{'':>24}{per_seed}")
    print(f"majority class: {report['majority_dev_acc']:.4f}; total {report['wall_s']:.0f} s")
    out = args.out or (runs.with_suffix(".json") if args.quick else ROOT / "experiments/results/gpt_sst2_finetune.json")
    from lmjax.results import write_results

    write_results(out, report, command="python experiments/gpt_sst2_finetune.py " + " ".join(sys.argv[1:]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
