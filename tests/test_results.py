"""The results writer, and the committed results files it guards: no machine's absolute paths in them."""

import json
import os
import pathlib
import tempfile

import numpy as np
import pytest

from lmjax import hardware, results

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def no_peers(monkeypatch):
    for name in results.PATH_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hardware, "measured_peak_gflops", lambda *a, **k: 321.0)
    monkeypatch.delenv(hardware.PEAK_ENV, raising=False)


def test_write_results_adds_hardware_command_date(tmp_path, no_peers):
    path = results.write_results(tmp_path / "sub" / "r.json", {"ppl": np.float32(141.5), "shape": (2, 3),
                                                                "ids": np.arange(3), "note": "Grüße"},
                                 command="python x.py --quick")
    out = json.loads(path.read_text(encoding="utf-8"))
    assert list(out)[:4] == ["ppl", "shape", "ids", "note"]  # the script's keys first, as given
    assert out["ppl"] == 141.5 and out["shape"] == [2, 3] and out["ids"] == [0, 1, 2] and out["note"] == "Grüße"
    assert out["command"] == "python x.py --quick" and out["date"].endswith("+00:00")
    assert out["matmul_peak_gflops"] == 321.0 and "fp32 matmul peak 321 GFLOP/s" in out["hardware"]
    cpu = hardware.cpu_info()
    assert (out["cpu_family"], out["cpu_model"], out["microarchitecture"]) == (cpu.family, cpu.model,
                                                                               cpu.microarchitecture)
    assert os.listdir(path.parent) == ["r.json"]  # no temporary file left behind


def test_rewriting_replaces_the_writers_keys(tmp_path, no_peers):
    path = tmp_path / "r.json"
    results.write_results(path, {"a": 1, "hardware": "old machine", "matmul_peak_gflops": 1.0, "date": "2020"})
    out = json.loads(path.read_text())
    assert out["hardware"] != "old machine" and out["matmul_peak_gflops"] == 321.0 and out["date"] != "2020"
    results.write_results(path, out, peak_gflops=250.0)  # a peak the script measured itself
    assert json.loads(path.read_text())["matmul_peak_gflops"] == 250.0


def test_paths_become_portable(tmp_path, monkeypatch, no_peers, capsys):
    home = os.path.expanduser("~")
    monkeypatch.setenv("NANOGPT_DIR", "/opt/peers/nanoGPT")
    values = {
        "png": str(REPO / "experiments" / "results" / "a.png"),
        "path_obj": REPO / "runs" / "x",
        "repo": str(REPO),
        "cmd": f"cd /opt/peers/nanoGPT && python train.py --out_dir={tempfile.gettempdir()}/scratch/seed0",
        "kenlm": "--kenlm-bin /srv/kenlm/build/bin",
        "cache": f"{home}/.cache/lmjax/x",
        "list": [f"{REPO}/benchmarks/b.py", "GFLOP/s over a/b at https://github.com/karpathy/nanoGPT"],
        str(REPO / "key.txt"): 1,
    }
    results.write_results(tmp_path / "r.json", values, command="python x.py",
                          placeholders={"KENLM_BIN": "/srv/kenlm/build/bin"})
    out = json.loads((tmp_path / "r.json").read_text())
    assert out["png"] == "experiments/results/a.png" and out["path_obj"] == "runs/x" and out["repo"] == "."
    assert out["cmd"] == "cd $NANOGPT_DIR && python train.py --out_dir=$TMPDIR/scratch/seed0"
    assert out["kenlm"] == "--kenlm-bin $KENLM_BIN"
    assert out["list"] == ["benchmarks/b.py", "GFLOP/s over a/b at https://github.com/karpathy/nanoGPT"]
    assert out["key.txt"] == 1
    assert out["cache"] == "~/.cache/lmjax/x"
    assert results.absolute_paths(out) == []
    assert "warning" not in capsys.readouterr().err


def test_unknown_absolute_paths_are_cut_with_a_warning(capsys):
    assert results.portable("lib /usr/lib/x86_64-linux-gnu/libtcmalloc.so.4 loaded", where="['env']") == \
        "lib …/libtcmalloc.so.4 loaded"
    assert "results['env']: absolute path '/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4'" in capsys.readouterr().err


def test_absolute_path_detector():
    assert results.absolute_paths({"a": "x=/work/shared/data", "/home/u/k": ["ms/step", "$TMPDIR/a/b", "~/a/b"]}) \
        == ["/work/shared/data", "/home/u/k"]
    assert results.absolute_paths(["2 n^3 / median seconds", "a/b/c", "file:///x", 3]) == []


def test_default_command_is_repository_relative(monkeypatch):
    monkeypatch.setattr("sys.argv", [str(REPO / "benchmarks" / "matmul_peak.py"), "--quick", "--out", "a b.json"])
    assert results.portable(results.default_command()) == "python benchmarks/matmul_peak.py --quick --out 'a b.json'"


@pytest.mark.parametrize("path", sorted(p.relative_to(REPO).as_posix() for folder in ("experiments", "benchmarks")
                                        for p in (REPO / folder / "results").glob("*.json")))
def test_committed_results_hold_no_absolute_paths(path):
    assert results.absolute_paths(json.loads((REPO / path).read_text(encoding="utf-8"))) == []
