"""The `lmjax` command line: presets, config overrides, user errors as one line, and train -> eval -> generate on the
smoke preset (which also exercises the embedded Tiny Shakespeare corpus and checkpoint fallback)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from lmjax.cli import main
from lmjax.config import list_presets


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    return err


def test_presets_one_line_each(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = list_presets()
    assert len(lines) == len(names) and "shakespeare_char" in names and "gpt_smoke" in names
    assert all(line.split()[0] in names and len(line.split()) > 1 for line in lines)


def test_unknown_preset(capsys):
    assert main(["train", "shakespear_char"]) == 2
    err = _one_line_error(capsys)
    assert "unknown preset" in err and "shakespeare_char" in err


def test_unknown_key_names_valid_keys(capsys):
    assert main(["config", "gpt_smoke", "--set", "model.n_layr=3"]) == 2
    err = _one_line_error(capsys)
    assert "model.n_layr" in err and "model.n_layer" in err and "optim.lr" in err


@pytest.mark.parametrize("override, fragment", [
    ("optim.lr=fast", "expects a float"),
    ("model.n_layer=2.5", "expects an int"),
    ("train.progress=maybe", "expects a bool"),
    ("optim=3", "is a section"),
    ("nokey", "key=value"),
])
def test_bad_values(capsys, override, fragment):
    assert main(["config", "gpt_smoke", "--set", override]) == 2
    assert fragment in _one_line_error(capsys)


def test_overrides_are_typed(capsys):
    assert main(["config", "gpt_smoke", "--set", "model.n_layer=3", "--set", "optim.lr=3e-4",
                 "--set", "train.progress=false", "--set", "optim.freeze=^wte,head"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"]["n_layer"] == 3 and cfg["optim"]["lr"] == 3e-4 and cfg["train"]["progress"] is False
    assert cfg["optim"]["freeze"] == ["^wte", "head"]


def test_heads_must_divide_width(capsys):
    assert main(["config", "gpt_smoke", "--set", "model.n_embd=30", "--set", "model.n_head=4"]) == 0  # config only
    assert main(["train", "gpt_smoke", "--set", "model.n_embd=30", "--set", "model.n_head=4"]) == 2
    assert "n_head" in _one_line_error(capsys)


def test_sequence_longer_than_positions(capsys, tmp_path):
    assert main(["train", "gpt_smoke", "--set", "data.seq_len=4096", "--set", f"train.workdir={tmp_path}"]) == 2
    assert "block_size" in _one_line_error(capsys)


def _lmjax(*args, cwd=None):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "lmjax", *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd)


def test_train_eval_generate_and_corrupt_checkpoint_fallback(tmp_path):
    work = tmp_path / "run"
    common = ["--set", f"train.workdir={work}", "--set", "train.checkpoint_every=10"]
    proc = _lmjax("train", "gpt_smoke", *common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "eval loss" in proc.stdout and "tokens/s" in proc.stdout and "sample:" in proc.stdout
    for name in ("metrics.jsonl", "loss.png", "config.json", "summary.json"):
        assert (work / name).exists(), name
    assert list((work / "tb").iterdir())
    steps = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [10, 20]

    ev = _lmjax("eval", "gpt_smoke", *common)
    assert ev.returncode == 0, ev.stderr[-3000:]
    out = json.loads(ev.stdout.strip().splitlines()[-1])
    assert out["step"] == 20 and out["eval_loss"] == pytest.approx(json.loads((work / "summary.json").read_text())
                                                                    ["eval_loss"], rel=1e-5)

    gen = _lmjax("generate", "gpt_smoke", *common, "--prompt", "ROMEO:", "--max-new-tokens", "20")
    assert gen.returncode == 0, gen.stderr[-3000:]
    assert gen.stdout.startswith("ROMEO:") and "tokens/s" in gen.stderr

    # Truncate the newest checkpoint: eval falls back to step 10, says so, and deletes nothing (the broken step is
    # set aside as 20.unreadable).
    victims = [p for p in (work / "checkpoints" / "20").rglob("*") if p.is_file() and p.stat().st_size > 0]
    for p in victims:
        p.write_bytes(b"")
    ev = _lmjax("eval", "gpt_smoke", *common)
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(ev.stdout.strip().splitlines()[-1])["step"] == 10
    assert "unreadable" in ev.stderr and "falling back" in ev.stderr
    assert (work / "checkpoints" / "20.unreadable").exists() and (work / "checkpoints" / "10").exists()


def test_missing_checkpoint_is_one_line(capsys, tmp_path):
    assert main(["eval", "gpt_smoke", "--set", f"train.workdir={tmp_path / 'none'}"]) == 2
    assert "lmjax train gpt_smoke" in _one_line_error(capsys)


def test_module_entry_point():
    proc = _lmjax("presets", cwd=pathlib.Path(__file__).parent)
    assert proc.returncode == 0 and "shakespeare_char" in proc.stdout


def test_ngram_subcommand(tmp_path, capsys):
    corpus = tmp_path / "train.txt"
    corpus.write_text("the cat sat\nthe dog sat\nthe cat ran\n")
    arpa = tmp_path / "lm.arpa"
    assert main(["ngram", "build", str(corpus), str(arpa), "--order", "2"]) == 0
    assert arpa.read_text().startswith("\n\\data\\") or "\\data\\" in arpa.read_text()
    capsys.readouterr()
    assert main(["ngram", "compare", str(arpa), "the cat sat", "sat cat the"]) == 0
    assert "the cat sat" in capsys.readouterr().out
