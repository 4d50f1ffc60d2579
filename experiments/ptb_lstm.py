"""Zaremba et al.'s PTB LSTMs with truncated BPTT, run as `lmjax train` and scored as `lmjax eval`.

    python experiments/ptb_lstm.py                          # zaremba_small, 13 epochs -> results/ptb_lstm_small.json
    python experiments/ptb_lstm.py --preset zaremba_medium  # -> results/ptb_lstm_medium.json
    python experiments/ptb_lstm.py --quick --out /tmp/q.json   # 30 steps of a 2x32 LSTM: a smoke check

1. `lmjax train PRESET`: the engine's `tbptt` task of the RNN family (the state carried across consecutive batches,
   checkpointed every epoch, so an interrupted run resumes where it stopped: run the same command again), Zaremba's
   recipe as config (plain SGD, lr 1 decayed per epoch by the step schedule, the loss summed over time and averaged
   over the batch, global-norm clipping). After each epoch it scores validation in B=20 contiguous rows, as
   Zaremba's code does.
2. `lmjax eval PRESET --split validation|test --set data.eval_batch_size=1`: the final perplexities with the whole
   split as one stream (every token with its full left context). Perplexity = exp(mean token cross entropy).
3. Writes the results JSON: final valid/test perplexities, the per-epoch validation curve, wall time, step time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
QUICK = ["model.hidden=32", "data.dataset=tiny_shakespeare", "data.tokenizer=char", "data.seq_len=64",
         "train.steps=30", "train.eval_every=15", "train.checkpoint_every=15", "train.eval_batches=4",
         "optim.decay_start=10", "optim.decay_every=10"]


def lmjax(*argv: str, env: dict) -> str:
    """Runs `lmjax ARGV` (as `python -m lmjax`, the same program) and returns its standard output."""
    cmd = [sys.executable, "-m", "lmjax", *argv]
    print("$ lmjax " + " ".join(argv), flush=True)
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if done.returncode:
        sys.exit(f"error: `lmjax {' '.join(argv)}` exited with status {done.returncode}")
    return done.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="zaremba_small")
    p.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--data-dir", default=os.environ.get("LMJAX_DATA_DIR", ""),
                   help="raw datasets laid out like shared/data (default $LMJAX_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help="a 2x32 LSTM on tiny_shakespeare for 30 steps")
    p.add_argument("--out", default="", help="results JSON (default experiments/results/ptb_lstm_<size>.json)")
    args = p.parse_args()
    if not args.data_dir and not args.quick:
        sys.exit("error: PTB is read from a local directory: pass --data-dir DIR or set LMJAX_DATA_DIR (a directory "
                 "laid out like shared/data, with ptb/ptb.train.txt ...)")

    overrides = [*(QUICK if args.quick else []), *args.set]
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    if args.quick:
        overrides.append(f"train.workdir={ROOT / 'runs' / 'ptb_lstm_quick'}")
    sets = [x for o in overrides for x in ("--set", o)]
    env = dict(os.environ)

    from lmjax.config import get_preset
    from lmjax.train.rundir import workdir_for

    cfg = get_preset(args.preset, overrides)
    workdir = workdir_for(cfg)
    t0 = time.perf_counter()
    print(lmjax("train", args.preset, *sets, env=env)[-2000:], flush=True)
    train_wall = time.perf_counter() - t0
    final = {}
    for split in ("validation", "test"):
        out = lmjax("eval", args.preset, *sets, "--split", split, "--set", "data.eval_batch_size=1", env=env)
        final[split] = json.loads(out.strip().splitlines()[-1])

    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((workdir / "summary.json").read_text())
    steps_per_epoch = cfg.train.eval_every
    history = [{"epoch": r["step"] / steps_per_epoch, "step": r["step"], "valid_ppl_b20": math.exp(r["eval_loss"])}
               for r in records if r["split"] == "eval"]
    train_records = [r for r in records if r["split"] == "train"]
    rates = sorted(r["tokens_per_s"] for r in train_records[1:] if r.get("tokens_per_s"))  # [0]: compilation
    median_rate = rates[len(rates) // 2] if rates else None
    command = " && ".join([f"lmjax train {args.preset}{''.join(' --set ' + o for o in args.set)}",
                           f"lmjax eval {args.preset} --split validation|test --set data.eval_batch_size=1"])
    result = {
        "valid_ppl": final["validation"]["perplexity"], "test_ppl": final["test"]["perplexity"],
        "valid_tokens": final["validation"]["eval_tokens"], "test_tokens": final["test"]["eval_tokens"],
        "steps": summary["step"], "epochs": summary["step"] / steps_per_epoch, "steps_per_epoch": steps_per_epoch,
        "preset": cfg.name, "task": cfg.task,
        # The training run's own figures (summary.json is written by the invocation that trained).
        "train_wall_s": summary["wall_s"], "tokens_per_s": summary["tokens_per_s"],
        "tokens_per_s_median_logged": median_rate,
        "ms_per_step": 1000 * cfg.data.batch_size * cfg.data.seq_len / median_rate if median_rate else None,
        "wall_s_this_invocation": train_wall,
        "final_train_loss": train_records[-1]["loss"] if train_records else None,
        "run_dir": str(workdir),
        "history": history,
    }
    from lmjax.results import write_results

    out = pathlib.Path(args.out) if args.out else (
        ROOT / "experiments/results" / f"ptb_lstm_{cfg.name.removeprefix('zaremba_')}.json")
    path = write_results(out, result, command=f"{command} (python experiments/ptb_lstm.py "
                                               f"{' '.join(sys.argv[1:])})".replace(" )", ")"))
    print(path.read_text())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
