"""The README's Python examples run as written, and its quick-start test command is the one .ci/run calls."""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block.replace("/tmp/lmjax-readme", str(tmp_path / "run")), "README.md", "exec"), {})
    assert "eval loss" in capsys.readouterr().out


def test_quick_start_has_two_commands_and_ci_runs_the_test_one():
    quick = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line for block in re.findall(r"```bash\n(.*?)```", quick, re.S) for line in block.splitlines()
                if line.strip() and not line.startswith("#")]
    assert len(commands) == 2 and "lmjax train" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()
