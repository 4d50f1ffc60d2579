"""Steady-state training throughput of a preset (default: the demo model), side by side under the CPU speed settings.

    .venv/bin/python benchmarks/train_throughput.py [--preset shakespeare_char] [--steps 300] [--out PATH]
    .venv/bin/python benchmarks/train_throughput.py --quick --out /tmp/tp.json   # gpt_smoke, 4 steps, 2 settings

Each setting runs in a fresh process (XLA flags and LD_PRELOAD act at start-up): plain; the YNN dot/reduce fusion
flag; tcmalloc; both (what `lmjax train` uses), each at 1 and 10 optimizer steps per compiled call. Per setting it
reports the median ms/step over timed calls after a warm-up call, tokens/s and MFU against the machine's fp32 matmul
peak, and the loss after the last step (the settings must agree). Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def worker(preset: str, steps: int, per_call: int) -> dict:
    import jax
    import numpy as np

    from lmjax.config import get_preset
    from lmjax.hardware import device_peak_flops
    from lmjax.train.engine import Engine
    from lmjax.train.metrics import mfu

    cfg = get_preset(preset, [f"train.steps_per_call={per_call}"])
    engine = Engine(cfg)
    state = engine.init_state()
    it = engine.data.train(0, 1)
    state, m = engine.train_steps(state, engine.stack_batches(it, per_call))  # compile
    jax.block_until_ready(m)
    times = []
    for _ in range(max(steps // per_call, 1)):
        host = engine.stack_batches(it, per_call)
        t0 = time.perf_counter()
        state, m = engine.train_steps(state, host)
        jax.block_until_ready(m)
        times.append((time.perf_counter() - t0) / per_call)
    ms = 1e3 * statistics.median(times)
    tokens = cfg.data.batch_size * cfg.optim.grad_accum * engine.task.tokens_per_example
    tok_s = tokens / (ms / 1e3)
    peak = device_peak_flops("float32")
    return {"ms_per_step": ms, "tokens_per_s": tok_s, "mfu": mfu(engine.task.flops_per_token, tok_s, peak),
            "peak_gflops": peak / 1e9, "loss": float(np.asarray(m["loss"])[-1])}


def child(args: list[str], env: dict[str, str]) -> str:
    """The last line a fresh Python process prints; its error output ends this process if it fails."""
    proc = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"error: {' '.join(args[:1] + args[2:])} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="shakespeare_char")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--worker", nargs=2, type=int, metavar=("STEPS", "PER_CALL"), help=argparse.SUPPRESS)
    p.add_argument("--quick", action="store_true", help="a smoke run: gpt_smoke, 4 steps, plain and the fastest "
                                                        "setting, 1 step per call")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "train_throughput.json",
                   help="results JSON (default benchmarks/results/train_throughput.json)")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.preset, *args.worker)))
        return
    if args.quick:
        args.preset, args.steps = "gpt_smoke", 4

    from lmjax.results import write_results
    from lmjax.runtime import YNN_FLAG, find_tcmalloc

    lib = find_tcmalloc()
    settings = {"plain": {}, "ynn": {"XLA_FLAGS": YNN_FLAG}}
    if lib:
        settings |= {"tcmalloc": {"LD_PRELOAD": lib}, "ynn+tcmalloc": {"XLA_FLAGS": YNN_FLAG, "LD_PRELOAD": lib}}
    if args.quick:
        settings = {name: settings[name] for name in ("plain", list(settings)[-1])}
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LD_PRELOAD")}
    rows = []
    # The peak is measured once, with plain flags, and shared, so MFU differences are throughput differences.
    peak = float(child(["-c", "from lmjax.hardware import device_peak_flops as f; print(f('float32') / 1e9)"],
                       {**base, "JAX_PLATFORMS": "cpu"}))
    for per_call in (1,) if args.quick else (1, 10):
        for name, env in settings.items():
            out = child([__file__, "--preset", args.preset, "--worker", str(args.steps), str(per_call)],
                        {**base, **env, "JAX_PLATFORMS": "cpu", "LMJAX_PEAK_GFLOPS": str(peak)})
            row = {"setting": name, "steps_per_call": per_call, **json.loads(out)}
            rows.append(row)
            print(f"{name:>13} x{per_call:<2}  {row['ms_per_step']:6.1f} ms/step  {row['tokens_per_s']:9,.0f} tok/s  "
                  f"MFU {100 * row['mfu']:5.1f}%  loss {row['loss']:.6f}", flush=True)
    plain = next(r for r in rows if r["setting"] == "plain" and r["steps_per_call"] == 1)["ms_per_step"]
    for r in rows:
        r["speedup_vs_plain"] = plain / r["ms_per_step"]
    report = {"benchmark": "train_throughput", "preset": args.preset, "peak_gflops": peak, "rows": rows}
    # The plain-flags peak the rows' MFU divides by is this file's fp32 matmul peak too.
    print(f"wrote {write_results(args.out, report, peak_gflops=peak)}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
