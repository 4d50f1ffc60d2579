"""Matmul GFLOP/s on this machine: JAX (jit `jnp.dot`), NumPy, and PyTorch if installed, in fp32 and bf16.

The fp32 JAX number is what lmjax uses as the CPU peak for MFU (`lmjax.hardware.device_peak_flops`).

    .venv/bin/python benchmarks/matmul_peak.py [--sizes 1024 2048 4096] [--repeats 5] [--out PATH]
    .venv/bin/python benchmarks/matmul_peak.py --quick --out /tmp/matmul.json    # n = 256, 3 repeats

Writes benchmarks/results/matmul_peak.json (hardware, versions, command, date, load average) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere, lmjax installed or not

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from lmjax.results import write_results  # noqa: E402


def gflops(fn, n: int, repeats: int) -> tuple[float, float]:
    """(median, best) GFLOP/s of an n x n x n matmul `fn()` over `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times) / 1e9, 2.0 * n**3 / min(times) / 1e9


def jax_runner(dtype: str, n: int):
    # As lmjax.hardware.measure_matmul_peak: jitted jnp.dot on device-resident inputs, synchronised each call.
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(kb, (n, n), jnp.float32).astype(dtype)
    dot = jax.jit(jnp.dot)
    return lambda: dot(a, b).block_until_ready()


def numpy_runner(dtype: str, n: int):
    if dtype != "float32":
        return None  # NumPy has no bf16 BLAS (ml_dtypes' bfloat16 matmul is a slow element loop)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    return lambda: a @ b


def torch_runner(dtype: str, n: int):
    try:
        import torch
    except ImportError:
        return None
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    a, b = torch.randn(n, n, dtype=tdtype), torch.randn(n, n, dtype=tdtype)
    return lambda: torch.mm(a, b)


RUNNERS = {"jax": jax_runner, "numpy": numpy_runner, "torch": torch_runner}


def versions() -> dict:
    out = {"python": platform.python_version(), "machine": platform.machine(), "jax": jax.__version__,
           "numpy": np.__version__}
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_threads"] = torch.get_num_threads()
    except ImportError:
        out["torch"] = None
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a smoke run: n = 256, 3 repeats")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "matmul_peak.json",
                   help="results JSON (default benchmarks/results/matmul_peak.json)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [256], 3

    load_before = os.getloadavg()
    results = []
    for dtype in args.dtypes:
        for n in args.sizes:
            row = {"dtype": dtype, "n": n}
            for lib, make in RUNNERS.items():
                fn = make(dtype, n)
                row[lib], row[f"{lib}_best"] = (None, None) if fn is None else gflops(fn, n, args.repeats)
            results.append(row)
            print(f"  {dtype:9s} n={n:5d}  " + "  ".join(
                f"{lib} {row[lib]:7.1f}" for lib in RUNNERS if row[lib] is not None), flush=True)

    report = {
        "benchmark": "matmul_peak",
        "unit": "GFLOP/s: 2 n^3 / median seconds (<lib>) and / fastest call (<lib>_best)",
        "versions": versions(),
        "env": {"XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", ""),
                "LD_PRELOAD": " ".join(map(os.path.basename, os.environ.get("LD_PRELOAD", "").split()))},
        "loadavg_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "repeats": args.repeats,
        "results": results,
    }
    write_results(args.out, report)  # its hardware line carries lmjax's own (cached) fp32 peak, as every file does
    hardware = json.loads(args.out.read_text())["hardware"]
    print(f"\nmatmul GFLOP/s, median (best) of {args.repeats}, on {hardware};"
          f" 1-min load {report['loadavg_1m']['before']} -> {report['loadavg_1m']['after']}")
    head = f"{'library':8s} {'dtype':9s}" + "".join(f"{n:>16d}" for n in args.sizes)
    print(head + "\n" + "-" * len(head))
    for lib in RUNNERS:
        for dtype in args.dtypes:
            rows = [r for r in results if r["dtype"] == dtype and r[lib] is not None]
            if rows:
                print(f"{lib:8s} {dtype:9s}" + "".join(f"{r[lib]:9.1f} ({r[lib + '_best']:4.0f})" for r in rows))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    from lmjax.runtime import run_script

    run_script(main)
