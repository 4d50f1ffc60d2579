"""Shakespeare-char with nanoGPT's CPU configuration, lmjax against nanoGPT's own train.py in one run.

    .venv/bin/python experiments/gpt_shakespeare_vs_nanogpt.py [--nanogpt /path/to/nanoGPT]

The measurement lives in benchmarks/gpt_vs_nanogpt.py (see its docstring for the protocol and the nanoGPT
checkout it needs); this entry point runs it with the defaults and writes
experiments/results/gpt_shakespeare_vs_nanogpt.json (val_loss, nanogpt_val_loss, ms_per_iter, nanogpt_ms_per_iter,
speedup, mfu, matmul_peak_gflops, plus tokens/s, wall times, exact full-split val losses and the load average).
"""

import pathlib
import runpy
import sys

if __name__ == "__main__":
    script = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "gpt_vs_nanogpt.py"
    sys.argv[0] = str(script)
    runpy.run_path(str(script), run_name="__main__")
