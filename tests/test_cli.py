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
    for command in ("config", "train"):  # `lmjax config` rejects what `lmjax train` would
        assert main([command, "gpt_smoke", "--set", "model.n_embd=30", "--set", "model.n_head=4"]) == 2
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

    ev = _lmjax("eval", "gpt_smoke", *common)  # the whole validation split, exact
    assert ev.returncode == 0, ev.stderr[-3000:]
    full = json.loads(ev.stdout.strip().splitlines()[-1])
    ev = _lmjax("eval", "gpt_smoke", *common, "--max-batches", "2")  # the batches training scored (eval_batches=2)
    assert ev.returncode == 0, ev.stderr[-3000:]
    out = json.loads(ev.stdout.strip().splitlines()[-1])
    assert out["step"] == 20 and out["eval_loss"] == pytest.approx(json.loads((work / "summary.json").read_text())
                                                                    ["eval_loss"], rel=1e-5)
    assert out["max_batches"] == 2 and "max_batches" not in full and full["eval_tokens"] > 10 * out["eval_tokens"]

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
    assert not (tmp_path / "none").exists()  # looking for a checkpoint writes nothing


@pytest.mark.parametrize("args, fragment", [
    (["train", "shakespear_char"], "unknown preset"),
    (["config", "gpt_smoke", "--set", "optim.lr=-1"], "optim.lr=-1.0 is invalid"),
    (["eval", "gpt_smoke", "--max-batches", "0"], "--max-batches=0 is invalid"),
])
def test_errors_as_a_program_are_one_line_on_stderr(args, fragment, tmp_path):
    """The `lmjax` program itself (logging set up, libraries imported): stderr holds exactly the error line."""
    proc = _lmjax(*args, "--set", f"train.workdir={tmp_path / 'run'}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert fragment in lines[0] and not proc.stdout


def test_debug_adds_the_traceback(capsys, monkeypatch):
    monkeypatch.setenv("LMJAX_DEBUG", "0")  # restored afterwards: --debug sets it for the process
    assert main(["config", "gpt_smoke", "--set", "model.n_layr=3", "--debug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):" and err[-1].startswith("error: ")
    assert "model.n_layr" in err[-1]


def test_a_held_workdir_is_one_line_naming_the_holder(capsys, tmp_path):
    from lmjax.train.lock import WorkdirLock

    with WorkdirLock(tmp_path):
        assert main(["train", "gpt_smoke", "--set", f"train.workdir={tmp_path}"]) == 2
    err = _one_line_error(capsys)
    assert f"{tmp_path} is in use by process {os.getpid()}" in err and "set train.workdir" in err


def test_a_run_too_short_to_time_says_so(capsys, tmp_path):
    """Two steps with one step per call: the only timed window would include compilation, so no rate is made up."""
    assert main(["train", "gpt_smoke", "--set", f"train.workdir={tmp_path}", "--set", "train.steps=2",
                 "--set", "train.steps_per_call=1", "--set", "train.eval_every=0", "--set", "train.sample_tokens=0",
                 "--set", "train.progress=false", "--set", "train.plot=false", "--set", "train.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert "tokens/s n/a (too few steps to time past compilation)" in out and "MFU 0.0%" not in out


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


# ------------------------------------------------------------------------ input validation: one line, exit status 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-step gpt_smoke run and a 2-step nnlm_smoke run (a family that does not generate)."""
    root = tmp_path_factory.mktemp("runs")
    quick = ["--set", "train.steps=2", "--set", "train.eval_every=0", "--set", "train.sample_tokens=0",
             "--set", "train.progress=false", "--set", "train.plot=false", "--set", "train.tensorboard=false"]
    for preset in ("gpt_smoke", "nnlm_smoke"):
        assert main(["train", preset, "--set", f"train.workdir={root / preset}", *quick]) == 0
    return root


class TestInputValidation:
    """Bad settings and flags fail before any work, as one line naming the setting and what it allows."""

    @pytest.mark.parametrize("command", ["config", "train"])
    @pytest.mark.parametrize("override, fragment", [
        ("data.batch_size=0", "data.batch_size=0 is invalid: it must be >= 1"),
        ("data.batch_size=-4", "data.batch_size=-4 is invalid: it must be >= 1"),
        ("data.seq_len=0", "data.seq_len=0 is invalid: it must be >= 1"),
        ("optim.lr=-1", "optim.lr=-1.0 is invalid: it must be > 0"),
        ("model.dropout=1.5", "model.dropout=1.5 is invalid: it must be in [0, 1)"),
        ("train.steps=0", "train.steps=0 is invalid: it must be >= 1"),
        ("train.eval_batches=-1", "train.eval_batches=-1 is invalid"),
    ])
    def test_bad_setting(self, capsys, tmp_path, command, override, fragment):
        assert main([command, "gpt_smoke", "--set", override, "--set", f"train.workdir={tmp_path / 'run'}"]) == 2
        assert fragment in _one_line_error(capsys)
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize("flags, fragment", [
        (["--prompt", ""], "--prompt is empty"),
        (["--prompt", "caf\udce9"], "--prompt is not UTF-8 text (byte 0xe9 at character 3)"),
        (["--max-new-tokens", "0"], "--max-new-tokens=0 is invalid: it must be >= 1"),
        (["--temperature", "-1"], "--temperature=-1.0 is invalid: it must be >= 0 (0 = greedy)"),
        (["--top-p", "0"], "--top-p=0.0 is invalid: it must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p=1.5 is invalid: it must be in (0, 1]"),
        (["--top-k", "-3"], "--top-k=-3 is invalid: it must be an integer >= 0"),
    ])
    def test_bad_generate_flag(self, capsys, tmp_path, flags, fragment):
        # Checked before the checkpoint is looked for: this run has none.
        assert main(["generate", "gpt_smoke", "--set", f"train.workdir={tmp_path}", *flags]) == 2
        assert fragment in _one_line_error(capsys)

    def test_a_long_prompt_keeps_its_last_tokens_and_says_so(self, capsys, trained):
        capsys.readouterr()
        prompt = "ROMEO: " * 6  # 42 characters, 42 tokens; gpt_smoke's context is 16
        args = ["generate", "gpt_smoke", "--set", f"train.workdir={trained / 'gpt_smoke'}", "--prompt", prompt,
                "--max-new-tokens", "4", "--temperature", "0"]
        assert main(args) == 0
        out, err = capsys.readouterr()
        warnings = [line for line in err.splitlines() if line.startswith("warning:")]
        assert warnings == ["warning: the prompt is 42 tokens, longer than the model's context (model.block_size=16): "
                            "only its last 16 tokens are kept"]
        assert out[:16] == prompt[-16:] and len(out) == 16 + 4 + 1  # the context, 4 new tokens, print's newline

    def test_a_prompt_the_tokenizer_cannot_encode(self, capsys, trained):
        capsys.readouterr()
        assert main(["generate", "gpt_smoke", "--set", f"train.workdir={trained / 'gpt_smoke'}",
                     "--prompt", "\u00e9t\u00e9"]) == 2
        assert "is not in this tokenizer's" in _one_line_error(capsys)

    def test_a_family_that_does_not_generate(self, capsys, trained):
        capsys.readouterr()
        assert main(["generate", "nnlm_smoke", "--set", f"train.workdir={trained / 'nnlm_smoke'}"]) == 2
        assert "model family 'nnlm' (task 'lm') does not generate text" in _one_line_error(capsys)


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"lmjax {metadata.version('lmjax')}"


def test_word2vec_is_an_lmjax_command(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "word2vec" in capsys.readouterr().out
    assert main(["word2vec", "neighbours", str(tmp_path / "missing.txt"), "the"]) == 2
    assert "no vectors file at" in _one_line_error(capsys)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 20)
    out = tmp_path / "v.txt"
    assert main(["word2vec", "train", "--corpus", str(corpus), "--out", str(out), "--min-count", "1", "--dim", "4",
                 "--epochs", "1", "--sample", "0", "--batch-size", "8", "--steps-per-call", "2"]) == 0
    assert out.read_text().startswith("5 4\n")


# ------------------------------------------------------------------------------- translate (transformer presets)


@pytest.fixture(scope="module")
def translator(tmp_path_factory, shared_data):
    """A 2-step transformer_smoke run evaluated (eval_bleu) and checkpointed at steps 1 and 2, with step 1's score
    raised so that the best checkpoint is not the latest. Sequences are cut at 16 tokens: few shapes to compile."""
    work = tmp_path_factory.mktemp("translate") / "run"
    common = ["--set", f"train.workdir={work}", "--set", f"data.data_dir={shared_data}"]
    quick = ["--set", "train.steps=2", "--set", "train.eval_every=1", "--set", "train.checkpoint_every=1",
             "--set", "model.max_len=16", "--set", "model.eval_sentences=8", "--set", "train.progress=false",
             "--set", "train.plot=false", "--set", "train.tensorboard=false"]
    assert main(["train", "transformer_smoke", *common, *quick]) == 0
    metrics = work / "checkpoints" / "1" / "metrics" / "metrics"
    metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "eval_bleu": 99.0}))
    return common + ["--set", "model.max_len=16"]


def test_translate_arguments_one_line_each_with_the_best_checkpoint(capsys, translator):
    capsys.readouterr()
    sentences = ["ein mann fährt fahrrad .", "", "zwei hunde spielen im schnee ."]
    assert main(["translate", "transformer_smoke", *translator, *sentences]) == 0
    out, err = capsys.readouterr()
    assert out.endswith("\n") and len(out[:-1].split("\n")) == 3  # the empty sentence gets its line too
    assert "sentences/s" in err and "beam 5" in err and "checkpoint step 1, the best by eval_bleu" in err
    # Without a best metric: the latest checkpoint, with a note; --beam 0 is greedy.
    assert main(["translate", "transformer_smoke", *translator, "--set", "train.best_metric=", "--beam", "0",
                 "ein hund ."]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1 and "greedy" in err and "checkpoint step 2, the latest" in err
    assert "warning: train.best_metric is empty: using the latest checkpoint, step 2" in err


def test_translate_stdin_gives_what_the_arguments_give(capsys, monkeypatch, translator):
    """One line per input line (UTF-8 bytes, CRLF or LF, empty lines included) and the same translations as the same
    sentences as arguments."""
    import io

    lines = ["ein mann fährt fahrrad .", "", "zwei hunde spielen im schnee .", "ein hund ."]
    capsys.readouterr()
    assert main(["translate", "transformer_smoke", *translator, *lines]) == 0
    expected = capsys.readouterr().out
    stdin = ("\r\n".join(lines[:2]) + "\n" + "\n".join(lines[2:]) + "\n").encode("utf-8")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="latin-1"))  # read as UTF-8
    assert main(["translate", "transformer_smoke", *translator]) == 0
    out, err = capsys.readouterr()
    assert out == expected and len(out[:-1].split("\n")) == 4 and "4 sentences in" in err


@pytest.mark.parametrize("args, stdin, fragment", [
    (["transformer_smoke", "--set", "train.workdir={tmp}/none", "ein hund ."], None, "lmjax train transformer_smoke"),
    (["gpt_smoke", "--set", "train.workdir={tmp}/none", "a"], None, "takes a transformer preset"),
    (["transformer_smoke", "--beam", "-1", "ein hund ."], None, "--beam=-1 is invalid"),
    (["transformer_smoke", "{trained}"], b"", "no sentences to translate"),
    (["transformer_smoke", "{trained}"], b"ein \xe9t\xe9\n", "not UTF-8 text (byte 0xe9 at offset 4)"),
])
def test_translate_errors_are_one_line(capsys, monkeypatch, tmp_path, translator, args, stdin, fragment):
    import io

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if "{trained}" in args:
        args = [*args[:args.index("{trained}")], *translator]
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    capsys.readouterr()
    assert main(["translate", *args]) == 2
    assert fragment in _one_line_error(capsys)
    assert not (tmp_path / "none").exists()  # looking for a checkpoint writes nothing
