"""nanoGPT's own train.py (PyTorch, CPU) against `lmjax train shakespeare_char`, same config, one run, same machine.

    .venv/bin/python benchmarks/gpt_vs_nanogpt.py [--nanogpt /work/nanogpt] [--iters 2000] [--lmjax-seeds 3]

The nanoGPT checkout needs data/shakespeare_char/{train,val}.bin (its prepare.py run on Tiny Shakespeare's
input.txt). Both train nanoGPT's README CPU configuration (4 layers, 4 heads, 128 wide, context 64, batch 12, 2000
iterations, lr 1e-3 -> 1e-4, dropout 0), torch with 2 threads (`--omp-passive` on a loaded machine), lmjax through
`.venv/bin/lmjax` (YNN fusion + tcmalloc, 10 steps per compiled call). Reports per system the median ms/iteration
(nanoGPT: its per-iteration `time` lines after iteration 0; lmjax: the per-call timings in metrics.jsonl after the
first, compiling call; evaluation excluded from both), tokens/s, the final val loss as each reports it (nanoGPT: mean
over `eval_iters` random batches of its last 10% split; lmjax: its eval windows), and, as a like-for-like check, the
exact loss of both final models over every non-overlapping 64-token window of nanoGPT's val.bin. MFU is against the
fp32 matmul peak measured in this run.
Writes experiments/results/gpt_shakespeare_vs_nanogpt.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = dict(block_size=64, batch_size=12, n_layer=4, n_head=4, n_embd=128)


def run_nanogpt(repo: pathlib.Path, iters: int, out_dir: pathlib.Path, passive: bool = False) -> dict:
    """nanoGPT's README CPU command, plus a checkpoint at every eval (so the final model can be scored exactly)."""
    args = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
            "--log_interval=1", *(f"--{k}={v}" for k, v in CONFIG.items()), f"--max_iters={iters}",
            f"--lr_decay_iters={iters}", "--dropout=0.0", f"--out_dir={out_dir}", "--always_save_checkpoint=True"]
    # OpenMP's default (active) waiting is torch's fast setting on a quiet machine (41 ms/iteration here against 72
    # with PASSIVE); on a shared, oversubscribed host its two threads spin at every barrier while the other is
    # descheduled (over 1 s/iteration at load 11), and --omp-passive is the fairer choice there.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"nanoGPT failed:\n{proc.stderr[-3000:]}")
    iter_ms = {int(i): float(t) for i, t in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", proc.stdout)}
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", proc.stdout)
    # iteration 0 includes start-up; those right after an eval include the eval: the median ignores both.
    ms = statistics.median(t for i, t in iter_ms.items() if i > 0)
    return {"ms_per_iter": ms, "val_loss": float(evals[-1][2]), "wall_s": wall,
            "command": f"cd {repo} && OMP_NUM_THREADS=2 {'OMP_WAIT_POLICY=PASSIVE ' * passive}python train.py "
                       f"{' '.join(args)}"}


def run_lmjax(iters: int, workdir: pathlib.Path, seed: int = 0) -> dict:
    overrides = [f"train.workdir={workdir}", "train.resume=false", "train.progress=false", f"train.steps={iters}",
                 f"train.seed={seed}", f"data.seed={seed}"]
    cmd = [str(ROOT / ".venv" / "bin" / "lmjax"), "train", "shakespeare_char",
           *(a for o in overrides for a in ("--set", o))]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"lmjax failed:\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    tokens_per_step = CONFIG["batch_size"] * CONFIG["block_size"]
    ms = statistics.median(1e3 * tokens_per_step / r["tokens_per_s"] for r in train[1:])  # [0] compiled
    return {"ms_per_iter": ms, "val_loss": evals[-1]["eval_loss"], "wall_s": wall, "command": " ".join(cmd)}


def cpu_model() -> str:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def torch_version() -> str:
    import torch

    return torch.__version__


def windows(ids: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Every non-overlapping block of `ids` as (inputs, targets) [N, block]."""
    n = (len(ids) - 1) // block
    return ids[: n * block].reshape(n, block), ids[1: n * block + 1].reshape(n, block)


def exact_val_nanogpt(repo: pathlib.Path, out_dir: pathlib.Path, val: np.ndarray) -> float:
    import torch

    sys.path.insert(0, str(repo))
    from model import GPT, GPTConfig  # nanoGPT's model.py

    ckpt = torch.load(out_dir / "ckpt.pt", map_location="cpu", weights_only=False)
    model = GPT(GPTConfig(**ckpt["model_args"]))
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    model.eval()
    x, y = windows(val.astype(np.int64), CONFIG["block_size"])
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(x), 256):
            _, loss = model(torch.from_numpy(x[s:s + 256]), torch.from_numpy(y[s:s + 256]))
            total += float(loss) * y[s:s + 256].size
    return total / y.size


def exact_val_lmjax(workdir: pathlib.Path, text: str) -> float:
    from lmjax.config import get_preset
    from lmjax.data import load_tokenizer
    from lmjax.train.checkpoint import Checkpointer
    from lmjax.train.engine import Engine
    from lmjax.train.task import Data

    cfg = get_preset("shakespeare_char", [f"train.workdir={workdir}"])
    tok = load_tokenizer(workdir / "tokenizer")
    engine = Engine(cfg, data=Data(tokenizer=tok, vocab_size=tok.vocab_size, train=None))
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints, best_metric=None)
    _, state, _ = ckpt.restore(engine.abstract_state())
    ckpt.close()
    x, y = windows(np.asarray(tok.encode(text), np.int32), CONFIG["block_size"])
    b = cfg.data.batch_size
    batches = ({"inputs": x[s:s + b], "targets": y[s:s + b]} for s in range(0, len(x) - b + 1, b))
    return engine.evaluate(state.params, batches)["eval_loss"]  # drops the last partial batch (< 12 of ~1740 rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nanogpt", type=pathlib.Path, default=pathlib.Path("/work/nanogpt"))
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--omp-passive", action="store_true",
                   help="run torch with OMP_WAIT_POLICY=PASSIVE (for a loaded machine; slower on a quiet one)")
    p.add_argument("--lmjax-seeds", type=int, default=1,
                   help="train lmjax with seeds 0..N-1 (nanoGPT's train.py hard-codes its seed, 1337: one run); the "
                        "headline figures are seed 0's, the JSON adds every seed's val losses and their mean")
    p.add_argument("--scratch", type=pathlib.Path, default=pathlib.Path("/tmp/gpt_vs_nanogpt"))
    p.add_argument("--out", type=pathlib.Path,
                   default=ROOT / "experiments" / "results" / "gpt_shakespeare_vs_nanogpt.json")
    args = p.parse_args()
    data_dir = args.nanogpt / "data" / "shakespeare_char"
    if not (data_dir / "val.bin").is_file():
        raise SystemExit(f"{data_dir}/val.bin is missing: copy Tiny Shakespeare's input.txt into {data_dir} and run "
                         f"its prepare.py there")
    shutil.rmtree(args.scratch, ignore_errors=True)
    load_before = os.getloadavg()[0]

    import jax  # after the subprocess-free checks; the parent only measures the peak and scores checkpoints

    from lmjax.config import get_preset
    from lmjax.models.gpt import make_task
    from lmjax.train.peak import measure_matmul_peak

    peak_gflops = measure_matmul_peak("float32")
    nano = run_nanogpt(args.nanogpt, args.iters, args.scratch / "nanogpt", passive=args.omp_passive)
    lmj = run_lmjax(args.iters, args.scratch / "lmjax")
    more = [run_lmjax(args.iters, args.scratch / f"lmjax_seed{i}", seed=i) for i in range(1, args.lmjax_seeds)]
    load_after = os.getloadavg()[0]

    meta = pickle.loads((data_dir / "meta.pkl").read_bytes())
    val = np.fromfile(data_dir / "val.bin", dtype=np.uint16)
    val_text = "".join(meta["itos"][int(i)] for i in val)
    nano_exact = exact_val_nanogpt(args.nanogpt, args.scratch / "nanogpt", val)
    lmj_exact = exact_val_lmjax(args.scratch / "lmjax", val_text)
    seeds = [{"seed": 0, "val_loss": lmj["val_loss"], "val_loss_full_split": lmj_exact,
              "ms_per_iter": lmj["ms_per_iter"]}]
    for i, r in enumerate(more, 1):
        seeds.append({"seed": i, "val_loss": r["val_loss"], "ms_per_iter": r["ms_per_iter"],
                      "val_loss_full_split": exact_val_lmjax(args.scratch / f"lmjax_seed{i}", val_text)})

    flops_per_token = make_task(get_preset("shakespeare_char"), meta["vocab_size"]).flops_per_token
    tokens = CONFIG["batch_size"] * CONFIG["block_size"]
    tok_s, nano_tok_s = (tokens / (r["ms_per_iter"] / 1e3) for r in (lmj, nano))
    result = {
        "val_loss": lmj["val_loss"],
        "nanogpt_val_loss": nano["val_loss"],
        "ms_per_iter": lmj["ms_per_iter"],
        "nanogpt_ms_per_iter": nano["ms_per_iter"],
        "speedup": nano["ms_per_iter"] / lmj["ms_per_iter"],
        "mfu": flops_per_token * tok_s / (peak_gflops * 1e9),
        "matmul_peak_gflops": peak_gflops,
        "tokens_per_s": tok_s,
        "nanogpt_tokens_per_s": nano_tok_s,
        "nanogpt_mfu": flops_per_token * nano_tok_s / (peak_gflops * 1e9),
        "wall_s": lmj["wall_s"],
        "nanogpt_wall_s": nano["wall_s"],
        "val_loss_full_split": lmj_exact,
        "nanogpt_val_loss_full_split": nano_exact,
        "lmjax_seeds": seeds,
        "val_loss_seed_mean": statistics.mean(r["val_loss"] for r in seeds),
        "val_loss_full_split_seed_mean": statistics.mean(r["val_loss_full_split"] for r in seeds),
        "lmjax_command": lmj["command"],
        "nanogpt_command": nano["command"],
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": load_after,
        "hardware": f"{cpu_model()}, {os.cpu_count()} cores, no GPU (torch {torch_version()}, jax {jax.__version__})",
        "command": ".venv/bin/python benchmarks/gpt_vs_nanogpt.py " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':>10} {'ms/iter':>9} {'tokens/s':>10} {'val loss':>9} {'full val':>9} {'wall s':>7}")
    print(f"{'nanoGPT':>10} {nano['ms_per_iter']:9.2f} {nano_tok_s:10,.0f} {nano['val_loss']:9.4f} "
          f"{nano_exact:9.4f} {nano['wall_s']:7.1f}")
    print(f"{'lmjax':>10} {lmj['ms_per_iter']:9.2f} {tok_s:10,.0f} {lmj['val_loss']:9.4f} "
          f"{lmj_exact:9.4f} {lmj['wall_s']:7.1f}")
    for r in seeds[1:]:
        print(f"{'lmjax s' + str(r['seed']):>10} {r['ms_per_iter']:9.2f} {'':>10} {r['val_loss']:9.4f} "
              f"{r['val_loss_full_split']:9.4f}")
    print(f"speedup {result['speedup']:.2f}x, lmjax MFU {result['mfu']:.1%} of {peak_gflops:.0f} GFLOP/s; "
          f"load {load_before:.1f} -> {load_after:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
