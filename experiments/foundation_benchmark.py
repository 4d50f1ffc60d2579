"""Foundation figures: this machine's fp32 matmul peak, the README demo's training tokens/s, MFU, eval loss and wall
time, and the test suite's wall time. Writes experiments/results/foundation_benchmark.json.

    .venv/bin/python experiments/foundation_benchmark.py [--suite] [--out PATH]
    .venv/bin/python experiments/foundation_benchmark.py --quick --out /tmp/f.json   # n = 256 peak, gpt_smoke demo

Each figure comes from a fresh process, as a user would run it: the peak from benchmarks/matmul_peak.py (best of
the plain and the YNN-fusion XLA flags at 2048, fp32: the higher peak, so MFU is not flattered), the demo from the
`lmjax train shakespeare_char` command with that peak as the MFU denominator, the suite from the README's pytest line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(cmd: list[str], env: dict[str, str]) -> None:
    """Run a command from the repository root; if it fails, end with its error output."""
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"error: {' '.join(cmd[1:4])} ... failed:\n{proc.stderr[-3000:]}")


def matmul_peak(n: int, repeats: int) -> float:
    """The better fp32 JAX GFLOP/s of benchmarks/matmul_peak.py with plain XLA flags and with the YNN fusion flag."""
    from lmjax.runtime import YNN_FLAG

    best = 0.0
    for flags in ("", YNN_FLAG):
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "matmul_peak.json"
            run([sys.executable, "benchmarks/matmul_peak.py", "--sizes", str(n), "--dtypes", "float32", "--repeats",
                 str(repeats), "--out", str(out)], {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"})
            best = max(best, json.loads(out.read_text())["results"][0]["jax"])
    return best


def demo(peak_gflops: float, preset: str) -> tuple[dict, float, str]:
    """`lmjax train PRESET` in a fresh process with `peak_gflops` as its MFU denominator: (summary, wall s, command)."""
    with tempfile.TemporaryDirectory(prefix="lmjax-demo-") as workdir:
        cmd = ["lmjax", "train", preset, "--set", f"train.workdir={workdir}"]
        t0 = time.perf_counter()
        run([str(pathlib.Path(sys.executable).with_name("lmjax")), *cmd[1:]],
            {**os.environ, "LMJAX_PEAK_GFLOPS": f"{peak_gflops:.1f}"})
        wall = time.perf_counter() - t0
        return json.loads(pathlib.Path(workdir, "summary.json").read_text()), wall, " ".join(cmd[:3])


def suite() -> float:
    env = {**os.environ, "CI": "true", "LMJAX_DATA_DIR": os.environ.get("LMJAX_DATA_DIR",
                                                                         str(ROOT.parent / "shared" / "data"))}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "tests"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--suite", action="store_true", help="also time the whole test suite (about 2-4 minutes)")
    p.add_argument("--quick", action="store_true", help="a smoke run: the peak at n = 256, the gpt_smoke preset as "
                                                        "the demo")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments" / "results" / "foundation_benchmark.json",
                   help="results JSON (default experiments/results/foundation_benchmark.json)")
    args = p.parse_args()
    from lmjax.results import write_results

    peak = matmul_peak(256, 3) if args.quick else matmul_peak(2048, 9)
    print(f"fp32 matmul peak: {peak:.0f} GFLOP/s", flush=True)
    summary, wall, demo_cmd = demo(peak, "gpt_smoke" if args.quick else "shakespeare_char")
    print(f"demo ({demo_cmd}): eval loss {summary['eval_loss']:.4f}, {summary['tokens_per_s']:,.0f} tokens/s, "
          f"MFU {100 * summary['mfu']:.1f}%, wall {wall:.1f} s", flush=True)
    result = {
        "matmul_peak_gflops": round(peak, 1),
        "demo_tokens_per_s": round(summary["tokens_per_s"], 1),
        "demo_mfu": round(summary["mfu"], 4),
        "demo_eval_loss": round(summary["eval_loss"], 4),
        "demo_wall_s": round(wall, 1),
        "demo_train_wall_s": round(summary["wall_s"], 1),
        "tcmalloc": "tcmalloc" in os.environ.get("LD_PRELOAD", "") or _has_tcmalloc(),
    }
    if args.suite:
        result["test_suite_s"] = round(suite(), 1)
        print(f"test suite: {result['test_suite_s']:.0f} s")
    elif args.out.exists():
        result["test_suite_s"] = json.loads(args.out.read_text()).get("test_suite_s")
    print(f"wrote {write_results(args.out, result, peak_gflops=peak)}")


def _has_tcmalloc() -> bool:
    from lmjax.runtime import find_tcmalloc

    return find_tcmalloc() is not None and os.environ.get("LMJAX_TCMALLOC", "1") != "0"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
