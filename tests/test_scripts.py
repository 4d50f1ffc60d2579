"""Every script in experiments/ and benchmarks/ runs: `--help` for each, and a `--quick` smoke run for each that
has one (its source names `--quick`), writing its results into a temporary directory, never into experiments/results
or benchmarks/results.

Scripts are found by glob, so a new one is covered as soon as it exists. A quick run needs what `NEEDS` says (a
script not listed there needs the offline datasets): a missing dataset skips, and fails under CI=true (the
`shared_data` fixture); a missing Python module or peer program skips, naming how to get it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmjax.results import absolute_paths

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.relative_to(REPO).as_posix() for folder in ("experiments", "benchmarks")
                 for p in (REPO / folder).glob("*.py"))
QUICK = [s for s in SCRIPTS if "--quick" in (REPO / s).read_text(encoding="utf-8")]  # its usage names it

# What a quick run needs beyond the core install: "data" (the offline datasets), Python modules and peer programs.
NEEDS: dict[str, set[str]] = {
    "benchmarks/bert_vs_torch.py": {"torch", "transformers"},
    "benchmarks/gpt_vs_nanogpt.py": {"torch", "nanogpt"},
    "benchmarks/lstm_vs_torch.py": {"torch"},
    "benchmarks/matmul_peak.py": set(),
    "benchmarks/ngram_vs_kenlm.py": {"data", "kenlm", "lmplz"},
    "benchmarks/train_throughput.py": set(),
    "benchmarks/transformer_vs_torch.py": {"data", "torch"},
    "benchmarks/word2vec_vs_gensim.py": {"data", "gensim"},
    "experiments/foundation_benchmark.py": set(),
    "experiments/gpt_shakespeare_vs_nanogpt.py": {"torch", "nanogpt"},
    "experiments/ptb_lstm.py": set(),  # --quick trains on the embedded tiny_shakespeare
    "experiments/ptb_ngram.py": {"data", "kenlm", "lmplz"},
}
MODULES = {"torch": "pip install torch", "transformers": "pip install transformers", "gensim": "pip install gensim", "kenlm": "pip install kenlm"}


def _nanogpt() -> str | None:
    path = Path(os.environ.get("NANOGPT_DIR", "") or "/nonexistent")
    if (path / "train.py").is_file() and (path / "data" / "shakespeare_char" / "val.bin").is_file():
        return None
    return ("a nanoGPT checkout with its shakespeare_char data prepared in $NANOGPT_DIR "
            "(git clone https://github.com/karpathy/nanoGPT; python data/shakespeare_char/prepare.py)")


def _lmplz() -> str | None:
    folder = os.environ.get("KENLM_BIN")
    found = os.access(os.path.join(folder, "lmplz"), os.X_OK) if folder else shutil.which("lmplz")
    return None if found else "KenLM's lmplz in $KENLM_BIN or on the PATH (build KenLM: see ../shared/STACK.md)"


PEERS = {"nanogpt": _nanogpt, "lmplz": _lmplz}

# Quick runs that take over ~10 s: seconds measured in one run of this file on 2 shared cores at load average 7-8.
# Still run in CI.
SLOW = {
    "benchmarks/bert_vs_torch.py": 40,
    "experiments/bert_imdb.py": 80,
    "experiments/elmo_imdb.py": 45,
    "benchmarks/gpt_vs_nanogpt.py": 91,
    "benchmarks/train_throughput.py": 25,
    "benchmarks/transformer_vs_torch.py": 77,
    "benchmarks/word2vec_vs_gensim.py": 14,
    "experiments/foundation_benchmark.py": 23,
    "experiments/gpt_shakespeare_vs_nanogpt.py": 76,
    "experiments/gpt_sst2_finetune.py": 76,
    "experiments/multi30k_rnn.py": 49,
    "experiments/multi30k_transformer.py": 59,
    "experiments/ptb_lstm.py": 19,
    "experiments/ptb_nnlm.py": 21,
    "experiments/transfer.py": 90,
}


# Scripts that still write their JSON themselves rather than through lmjax.results.write_results: their quick run
# must succeed and stay out of the results directories, but the results-file checks wait for the switch.
OWN_WRITERS = {"experiments/gpt_sst2_finetune.py", "experiments/ptb_lstm.py"}


def _env() -> dict[str, str]:
    # The session's private caches and fixed MFU peak (tests/conftest.py) are inherited through os.environ.
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}


def _results_files() -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for folder in ("experiments", "benchmarks")
            for p in (REPO / folder / "results").rglob("*") if p.is_file()}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    proc = subprocess.run([sys.executable, script, "--help"], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("usage: ")


@pytest.mark.parametrize("script", [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in QUICK])
def test_quick(script, tmp_path, request):
    env = _env()
    for need in sorted(NEEDS.get(script, {"data"})):
        if need == "data":
            env["LMJAX_DATA_DIR"] = str(request.getfixturevalue("shared_data"))
        elif need in MODULES:
            if importlib.util.find_spec(need) is None:
                pytest.skip(f"{script} --quick needs the {need} module ({MODULES[need]})")
        elif (missing := PEERS[need]()) is not None:
            pytest.skip(f"{script} --quick needs {missing}")
    before = _results_files()
    out = tmp_path / "out" / "results.json"
    proc = subprocess.run([sys.executable, script, "--quick", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    results = json.loads(out.read_text(encoding="utf-8"))
    assert _results_files() == before, "a quick run wrote into experiments/results or benchmarks/results"
    if script in OWN_WRITERS:
        return
    assert {"hardware", "command", "date", "cpu_family", "cpu_model", "microarchitecture",
            "matmul_peak_gflops"} <= set(results)
    assert results["command"].startswith(f"python {script} --quick")
    assert absolute_paths(results) == [] and "absolute path" not in proc.stderr
    if script == "experiments/multi30k_rnn.py":
        _check_rescore(script, out, results, env)


def _check_rescore(script, out, results, env):
    """`rescore` recomputes the same BLEU from the saved hypotheses; a hypotheses file one line short is an error."""
    run = results["runs"]["additive"]
    proc = subprocess.run([sys.executable, script, "rescore", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(out.read_text(encoding="utf-8"))["runs"]["additive"]
    keys = [k for k in run if k.startswith("bleu_")]
    assert keys and {k: again[k] for k in keys} == {k: run[k] for k in keys}
    hyps = sorted((out.parent / out.stem / "hyps" / "additive").glob("test2016.*.txt"))
    assert hyps, "no hypotheses were written"
    lines = hyps[0].read_text(encoding="utf-8").splitlines(keepends=True)
    hyps[0].write_text("".join(lines[:-1]), encoding="utf-8")
    proc = subprocess.run([sys.executable, script, "rescore", "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
