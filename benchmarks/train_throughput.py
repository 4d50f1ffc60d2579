"""Steady-state training throughput of a preset (default: the demo model), side by side under the CPU speed settings.

    .venv/bin/python benchmarks/train_throughput.py [--preset shakespeare_char] [--steps 300]

Each setting runs in a fresh process (XLA flags and LD_PRELOAD act at start-up): plain; the YNN dot/reduce fusion
flag; tcmalloc; both (what `lmjax train` uses), each at 1 and 10 optimizer steps per compiled call. Per setting it
reports the median ms/step over timed calls after a warm-up call, tokens/s and MFU against the machine's fp32 matmul
peak, and the loss after the last step (the settings must agree). Writes benchmarks/results/train_throughput.json.
"""

from __future__ import annotations

import argparse
import datetime
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
    from lmjax.train.engine import Engine
    from lmjax.train.peak import device_peak_flops, mfu

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="shakespeare_char")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--worker", nargs=2, type=int, metavar=("STEPS", "PER_CALL"), help=argparse.SUPPRESS)
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "train_throughput.json")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.preset, *args.worker)))
        return

    from lmjax.train.peak import YNN_FLAG, find_tcmalloc

    lib = find_tcmalloc()
    settings = {"plain": {}, "ynn": {"XLA_FLAGS": YNN_FLAG}}
    if lib:
        settings |= {"tcmalloc": {"LD_PRELOAD": lib}, "ynn+tcmalloc": {"XLA_FLAGS": YNN_FLAG, "LD_PRELOAD": lib}}
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "LD_PRELOAD")}
    rows = []
    # The peak is measured once, with plain flags, and shared, so MFU differences are throughput differences.
    peak_env = subprocess.run([sys.executable, "-c", "from lmjax.train.peak import device_peak_flops as f; "
                               "print(f('float32') / 1e9)"], env={**base, "JAX_PLATFORMS": "cpu"},
                              capture_output=True, text=True, check=True)
    peak = float(peak_env.stdout.strip().splitlines()[-1])
    for per_call in (1, 10):
        for name, env in settings.items():
            proc = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--worker", str(args.steps),
                                   str(per_call)], env={**base, **env, "JAX_PLATFORMS": "cpu",
                                                        "LMJAX_PEAK_GFLOPS": str(peak)},
                                  capture_output=True, text=True, check=True)
            row = {"setting": name, "steps_per_call": per_call, **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(f"{name:>13} x{per_call:<2}  {row['ms_per_step']:6.1f} ms/step  {row['tokens_per_s']:9,.0f} tok/s  "
                  f"MFU {100 * row['mfu']:5.1f}%  loss {row['loss']:.6f}", flush=True)
    plain = next(r for r in rows if r["setting"] == "plain" and r["steps_per_call"] == 1)["ms_per_step"]
    for r in rows:
        r["speedup_vs_plain"] = plain / r["ms_per_step"]
    report = {"benchmark": "train_throughput", "preset": args.preset, "peak_gflops": peak, "rows": rows,
              "hardware": f"{os.cpu_count()} cores; " + next((line.split(':', 1)[1].strip() for line in
                                                               open('/proc/cpuinfo') if line.startswith('model name')),
                                                              ""),
              "loadavg_1m": os.getloadavg()[0],
              "command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
