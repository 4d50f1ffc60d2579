"""Foundation figures: this machine's fp32 matmul peak, the README demo's training tokens/s, MFU, eval loss and wall
time, and the test suite's wall time. Writes experiments/results/foundation_benchmark.json.

    .venv/bin/python experiments/foundation_benchmark.py [--suite]

Each figure comes from a fresh process, as a user would run it: the peak from benchmarks/matmul_peak.py (best of
the plain and the YNN-fusion XLA flags at 2048, fp32: the higher peak, so MFU is not flattered), the demo from the
`lmjax train shakespeare_char` command with that peak as the MFU denominator, the suite from the README's pytest line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
YNN = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"


def hardware() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor() or platform.machine())
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{model}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, CPU only"


def matmul_peak() -> float:
    best = 0.0
    for flags in ("", YNN):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
            subprocess.run([sys.executable, "benchmarks/matmul_peak.py", "--sizes", "2048", "--dtypes", "float32",
                            "--repeats", "9", "--out", out.name], cwd=ROOT, env=env, check=True,
                           capture_output=True)
            row = json.loads(pathlib.Path(out.name).read_text())["results"][0]
            best = max(best, row["jax"])
    return best


def demo(peak_gflops: float) -> tuple[dict, float, str]:
    workdir = tempfile.mkdtemp(prefix="lmjax-demo-")
    cmd = ["lmjax", "train", "shakespeare_char", "--set", f"train.workdir={workdir}"]
    env = {**os.environ, "LMJAX_PEAK_GFLOPS": f"{peak_gflops:.1f}"}
    t0 = time.perf_counter()
    subprocess.run([str(pathlib.Path(sys.executable).with_name("lmjax")), *cmd[1:]], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments" / "results" / "foundation_benchmark.json")
    args = p.parse_args()
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak:.0f} GFLOP/s", flush=True)
    summary, wall, demo_cmd = demo(peak)
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
    result.update(hardware=hardware(), command=" ".join(["python", "experiments/foundation_benchmark.py",
                                                         *sys.argv[1:]]),
                  date=datetime.date.today().isoformat())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(ROOT)}")


def _has_tcmalloc() -> bool:
    from lmjax.train.peak import find_tcmalloc

    return find_tcmalloc() is not None and os.environ.get("LMJAX_TCMALLOC", "1") != "0"


if __name__ == "__main__":
    main()
