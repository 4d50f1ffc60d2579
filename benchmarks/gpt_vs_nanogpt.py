"""nanoGPT's own train.py (PyTorch, CPU) against `lmjax train shakespeare_char`, same config, same machine, one run.

    .venv/bin/python benchmarks/gpt_vs_nanogpt.py [--nanogpt DIR] [--iters 2000] [--seeds 3] [--out PATH]
    .venv/bin/python benchmarks/gpt_vs_nanogpt.py --quick --out /tmp/gvn.json   # 20 iterations, one seed

The nanoGPT checkout (`--nanogpt DIR`, else $NANOGPT_DIR; `git clone https://github.com/karpathy/nanoGPT`) needs
data/shakespeare_char/{train,val}.bin (its prepare.py run on Tiny Shakespeare's input.txt). Both train nanoGPT's README CPU configuration (4 layers, 4 heads, 128 wide, context 64, batch 12, 2000
iterations, lr 1e-3 -> 1e-4, dropout 0), torch with 2 threads (`--omp-passive` on a loaded machine), lmjax through
`.venv/bin/lmjax` (YNN fusion + tcmalloc, 10 steps per compiled call), for seeds 0..N-1 each, the two alternating.
nanoGPT hard-codes torch.manual_seed(1337); seed k > 0 runs a copy of its train.py with 1337 + k, nothing else
changed. Reports per run the median ms/iteration (nanoGPT: its per-iteration `time` lines after iteration 0; lmjax:
the per-call timings in metrics.jsonl after the first, compiling call; evaluation excluded from both), the final val
loss as each reports it (nanoGPT: mean over `eval_iters` random batches of its last 10% split; lmjax: its eval
windows) and, as a like-for-like check, the exact loss of both final models over every non-overlapping 64-token
window of nanoGPT's val.bin. Headline: the median ms/iteration over each system's runs, their ratio, and the val
losses' means over seeds. MFU is against the fp32 matmul peak measured in this run.
Writes experiments/results/gpt_shakespeare_vs_nanogpt.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pickle
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = dict(block_size=64, batch_size=12, n_layer=4, n_head=4, n_embd=128)
NANOGPT_ENV = "NANOGPT_DIR"


SEED_LINE = "torch.manual_seed(1337 + seed_offset)"


def nanogpt_script(repo: pathlib.Path, seed: int, scratch: pathlib.Path) -> pathlib.Path:
    """nanoGPT's train.py for seed 0; for seed k > 0 a copy in `scratch` whose only change is the hard-coded torch
    seed, 1337 -> 1337 + k (nanoGPT has no seed option). The copy runs with cwd and PYTHONPATH at the checkout."""
    if seed == 0:
        return repo / "train.py"
    source = (repo / "train.py").read_text()
    if source.count(SEED_LINE) != 1:
        raise SystemExit(f"{repo}/train.py no longer contains {SEED_LINE!r} once: run with --seeds 1")
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"train_seed{seed}.py"
    path.write_text(source.replace(SEED_LINE, f"torch.manual_seed({1337 + seed} + seed_offset)"))
    return path


def run_nanogpt(repo: pathlib.Path, iters: int, out_dir: pathlib.Path, passive: bool = False, seed: int = 0) -> dict:
    """nanoGPT's README CPU command, plus a checkpoint at every eval (so the final model can be scored exactly)."""
    # eval_interval: its config's 250, or every iteration of a shorter run, so the last iteration is evaluated and
    # checkpointed (nanoGPT saves at evaluations only).
    args = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
            f"--eval_interval={min(250, iters)}", "--log_interval=1", *(f"--{k}={v}" for k, v in CONFIG.items()),
            f"--max_iters={iters}",
            f"--lr_decay_iters={iters}", "--dropout=0.0", f"--out_dir={out_dir}", "--always_save_checkpoint=True"]
    # OpenMP's default (active) waiting is torch's fast setting on a quiet machine (41 ms/iteration here against 72
    # with PASSIVE); on a shared, oversubscribed host its two threads spin at every barrier while the other is
    # descheduled (over 1 s/iteration at load 11), and --omp-passive is the fairer choice there.
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONPATH": str(repo)}
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    script = nanogpt_script(repo, seed, out_dir.parent / "scripts")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(script), *args], cwd=repo, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"nanoGPT failed:\n{proc.stderr[-3000:]}")
    iter_ms = {int(i): float(t) for i, t in re.findall(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", proc.stdout)}
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", proc.stdout)
    # iteration 0 includes start-up; those right after an eval include the eval: the median ignores both.
    ms = statistics.median(t for i, t in iter_ms.items() if i > 0)
    return {"ms_per_iter": ms, "val_loss": float(evals[-1][2]), "wall_s": wall,
            "command": f"cd {repo} && OMP_NUM_THREADS=2 {'OMP_WAIT_POLICY=PASSIVE ' * passive}python {script.name} "
                       f"{' '.join(args)}"}


def run_lmjax(iters: int, workdir: pathlib.Path, seed: int = 0) -> dict:
    overrides = [f"train.workdir={workdir}", "train.resume=false", "train.progress=false", f"train.steps={iters}",
                 f"train.seed={seed}", f"data.seed={seed}"]
    cmd = [sys.executable, "-m", "lmjax", "train", "shakespeare_char", *(a for o in overrides for a in ("--set", o))]
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
    p.add_argument("--nanogpt", type=pathlib.Path, default=os.environ.get(NANOGPT_ENV), metavar="DIR",
                   help=f"a nanoGPT checkout (default ${NANOGPT_ENV})")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--omp-passive", action="store_true",
                   help="run torch with OMP_WAIT_POLICY=PASSIVE (for a loaded machine; slower on a quiet one)")
    p.add_argument("--seeds", type=int, default=3,
                   help="train both with seeds 0..N-1, alternating nanoGPT and lmjax runs (nanoGPT's seed 1337 + k "
                        "through a patched copy of its train.py); ms/iteration is the median over the runs, the val "
                        "losses are means over seeds, and the JSON keeps every run")
    p.add_argument("--scratch", type=pathlib.Path, default=None,
                   help="working directory for both runs, emptied first (default: a new temporary directory)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 20 iterations, one seed")
    p.add_argument("--out", type=pathlib.Path,
                   default=ROOT / "experiments" / "results" / "gpt_shakespeare_vs_nanogpt.json",
                   help="results JSON (default experiments/results/gpt_shakespeare_vs_nanogpt.json)")
    args = p.parse_args()
    if args.quick:
        args.iters, args.seeds = 20, 1
    if args.nanogpt is None or not (args.nanogpt / "train.py").is_file():
        where = f"no nanoGPT checkout at {args.nanogpt}" if args.nanogpt else "no nanoGPT checkout given"
        sys.exit(f"error: {where}: clone https://github.com/karpathy/nanoGPT and pass --nanogpt DIR or set "
                 f"{NANOGPT_ENV}=DIR")
    data_dir = args.nanogpt / "data" / "shakespeare_char"
    if not (data_dir / "val.bin").is_file():
        sys.exit(f"error: {data_dir}/val.bin is missing: copy Tiny Shakespeare's input.txt into {data_dir} and run "
                 f"its prepare.py there")
    temporary = args.scratch is None
    if temporary:
        args.scratch = pathlib.Path(tempfile.mkdtemp(prefix="gpt_vs_nanogpt-"))
    shutil.rmtree(args.scratch, ignore_errors=True)
    load_before = os.getloadavg()[0]

    from lmjax.config import get_preset
    from lmjax.hardware import measure_matmul_peak
    from lmjax.models.gpt import make_task
    from lmjax.results import write_results
    from lmjax.train.task import Data

    peak_gflops = measure_matmul_peak("float32")
    nanos, lmjs = [], []
    for seed in range(args.seeds):  # alternating, so a drift in machine load hits both alike
        nanos.append(run_nanogpt(args.nanogpt, args.iters, args.scratch / f"nanogpt_seed{seed}",
                                 passive=args.omp_passive, seed=seed))
        lmjs.append(run_lmjax(args.iters, args.scratch / f"lmjax_seed{seed}", seed=seed))
        print(f"seed {seed}: nanoGPT {nanos[-1]['ms_per_iter']:.2f} ms/iter val {nanos[-1]['val_loss']:.4f}; "
              f"lmjax {lmjs[-1]['ms_per_iter']:.2f} ms/iter val {lmjs[-1]['val_loss']:.4f}", flush=True)
    load_after = os.getloadavg()[0]

    meta = pickle.loads((data_dir / "meta.pkl").read_bytes())
    val = np.fromfile(data_dir / "val.bin", dtype=np.uint16)
    val_text = "".join(meta["itos"][int(i)] for i in val)
    runs = []
    for seed, (n, m) in enumerate(zip(nanos, lmjs)):
        runs.append({"seed": seed, "nanogpt_ms_per_iter": n["ms_per_iter"], "ms_per_iter": m["ms_per_iter"],
                     "nanogpt_val_loss": n["val_loss"], "val_loss": m["val_loss"],
                     "nanogpt_val_loss_full_split": exact_val_nanogpt(args.nanogpt, args.scratch /
                                                                      f"nanogpt_seed{seed}", val),
                     "val_loss_full_split": exact_val_lmjax(args.scratch / f"lmjax_seed{seed}", val_text),
                     "nanogpt_wall_s": n["wall_s"], "wall_s": m["wall_s"]})
    mean = lambda key: statistics.mean(r[key] for r in runs)  # noqa: E731
    ms, nano_ms = (statistics.median(r[k] for r in runs) for k in ("ms_per_iter", "nanogpt_ms_per_iter"))

    vocab = Data(tokenizer=None, vocab_size=meta["vocab_size"], train=None)
    flops_per_token = make_task(get_preset("shakespeare_char"), vocab).flops_per_token
    tokens = CONFIG["batch_size"] * CONFIG["block_size"]
    tok_s, nano_tok_s = tokens / (ms / 1e3), tokens / (nano_ms / 1e3)
    result = {
        "val_loss": mean("val_loss"),
        "nanogpt_val_loss": mean("nanogpt_val_loss"),
        "ms_per_iter": ms,
        "nanogpt_ms_per_iter": nano_ms,
        "speedup": nano_ms / ms,
        "mfu": flops_per_token * tok_s / (peak_gflops * 1e9),
        "matmul_peak_gflops": peak_gflops,
        "tokens_per_s": tok_s,
        "nanogpt_tokens_per_s": nano_tok_s,
        "nanogpt_mfu": flops_per_token * nano_tok_s / (peak_gflops * 1e9),
        "val_loss_full_split": mean("val_loss_full_split"),
        "nanogpt_val_loss_full_split": mean("nanogpt_val_loss_full_split"),
        "seeds": len(runs),
        "speedup_per_seed": [r["nanogpt_ms_per_iter"] / r["ms_per_iter"] for r in runs],
        "runs": runs,
        "wall_s": mean("wall_s"),
        "nanogpt_wall_s": mean("nanogpt_wall_s"),
        "lmjax_command": lmjs[0]["command"],
        "nanogpt_command": nanos[0]["command"],
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": load_after,
        "torch": torch_version(),
    }
    # The peak this run measured, the MFU denominator, is the hardware line's too.
    write_results(args.out, result, peak_gflops=peak_gflops, placeholders={NANOGPT_ENV: args.nanogpt})
    if temporary:
        shutil.rmtree(args.scratch, ignore_errors=True)
    print(f"{'':>12} {'ms/iter':>9} {'val loss':>9} {'full val':>9}")
    for r in runs:
        for name, pre in (("nanoGPT", "nanogpt_"), ("lmjax", "")):
            print(f"{name + ' s' + str(r['seed']):>12} {r[pre + 'ms_per_iter']:9.2f} {r[pre + 'val_loss']:9.4f} "
                  f"{r[pre + 'val_loss_full_split']:9.4f}")
    print(f"{'mean':>12} nanoGPT val {result['nanogpt_val_loss']:.4f} / {result['nanogpt_val_loss_full_split']:.4f}, "
          f"lmjax {result['val_loss']:.4f} / {result['val_loss_full_split']:.4f}")
    print(f"speedup {result['speedup']:.2f}x, lmjax MFU {result['mfu']:.1%} of {peak_gflops:.0f} GFLOP/s; "
          f"load {load_before:.1f} -> {load_after:.1f}; wrote {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
