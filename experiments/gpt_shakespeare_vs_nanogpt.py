"""Shakespeare-char with nanoGPT's CPU configuration, lmjax against nanoGPT's own train.py in one run.

    .venv/bin/python experiments/gpt_shakespeare_vs_nanogpt.py [--nanogpt DIR]   # or NANOGPT_DIR=DIR

The measurement lives in benchmarks/gpt_vs_nanogpt.py (see its docstring for the protocol and the nanoGPT
checkout it needs; it takes the same options, --quick and --help included); this entry point runs it and writes
experiments/results/gpt_shakespeare_vs_nanogpt.json (val_loss, nanogpt_val_loss, ms_per_iter, nanogpt_ms_per_iter,
speedup, mfu, matmul_peak_gflops, plus tokens/s, wall times, exact full-split val losses and the load average).
"""

import pathlib
import sys

if __name__ == "__main__":
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from benchmarks.gpt_vs_nanogpt import main
    from lmjax.runtime import run_script

    run_script(main)  # sys.argv stays this script's: its usage and the results' command name it
