"""Results files: one JSON object per experiment or benchmark run, saying what was measured, where and how.

    from lmjax.results import write_results
    write_results(args.out, {"test_ppl": 141.19, "build_s": 2.1})

adds the facts of `lmjax.hardware.hardware_info` (flat keys such as `cpu_family`, `cpu_model`,
`microarchitecture`, `matmul_peak_gflops`, and the one-line `hardware`), the `command` that produced the file and the
`date` (UTC), then writes it atomically (a temporary file and a rename: an interrupted run never leaves half a file).

Results files are committed, so no value may hold a path of the machine that wrote it. Every string is rewritten:
paths inside the repository become repository-relative, the directories named by LMJAX_DATA_DIR, NANOGPT_DIR and
KENLM_BIN (and any `placeholders`) become `$LMJAX_DATA_DIR`, ..., the temporary directory `$TMPDIR` and the home
directory `~`. Any other absolute path is cut to `…/<last part>` with a warning on stderr.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import re
import shlex
import sys
import tempfile
from typing import Any, Mapping

from lmjax.hardware import hardware_info
from lmjax.runtime import write_json_atomic

REPO = pathlib.Path(__file__).resolve().parents[1]
PATH_ENVS = ("LMJAX_DATA_DIR", "NANOGPT_DIR", "KENLM_BIN")
# An absolute path inside a string: a "/" that starts a word (not "GFLOP/s", "a/b", "$TMPDIR/x", "~/x" or a URL's
# "//"), followed by at least two components.
ABSOLUTE_PATH = re.compile(r"(?<![\w.~$/:\-}])/[\w.+@-]+/[\w.+@/-]*")


def _roots(placeholders: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """(absolute directory, what to write instead), longest directory first, each also in its resolved form."""
    named = {f"${k}": os.environ[k] for k in PATH_ENVS if os.environ.get(k)}
    named |= {(k if k.startswith("$") else f"${k}"): v for k, v in (placeholders or {}).items() if v}
    pairs = [(str(REPO), ""), (tempfile.gettempdir(), "$TMPDIR"), (os.path.expanduser("~"), "~")]
    pairs += [(str(pathlib.Path(v).expanduser().absolute()), k) for k, v in named.items()]
    roots = {}
    for path, name in pairs:
        for p in (path.rstrip("/"), os.path.realpath(path).rstrip("/")):
            if len(p) > 1:  # never "/" itself
                roots.setdefault(p, name)
    return sorted(roots.items(), key=lambda item: -len(item[0]))


def portable(text: str, placeholders: Mapping[str, Any] | None = None, *, where: str = "") -> str:
    """`text` with every absolute path rewritten as the module docstring says (a warning names `where` for a path
    that had to be cut)."""
    for root, name in _roots(placeholders):
        pattern = re.compile(rf"(?<![\w.~$/\-]){re.escape(root)}(?=/|$|[^\w.+@-])(/?)")
        if name:
            text = pattern.sub(lambda m: name + m.group(1), text)
        else:  # the repository: "REPO/x" -> "x", "REPO" -> "."
            text = pattern.sub(lambda m: "" if m.group(1) else ".", text)

    def cut(m: re.Match) -> str:
        short = "…/" + (m.group(0).rstrip("/").rsplit("/", 1)[-1])
        print(f"warning: results{where}: absolute path {m.group(0)!r} written as {short!r}", file=sys.stderr)
        return short

    return ABSOLUTE_PATH.sub(cut, text)


def absolute_paths(obj: Any) -> list[str]:
    """Every absolute path in the strings (keys and values) of a JSON-like object: what a results file must not hold."""
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in absolute_paths(k) + absolute_paths(v)]
    if isinstance(obj, (list, tuple)):
        return [p for v in obj for p in absolute_paths(v)]
    return ABSOLUTE_PATH.findall(obj) if isinstance(obj, str) else []


def _plain(obj: Any, placeholders: Mapping[str, Any] | None, where: str = "") -> Any:
    """A JSON-ready copy: paths as portable strings, tuples as lists, NumPy scalars and arrays as Python values."""
    if isinstance(obj, dict):
        return {portable(str(k), placeholders, where=where): _plain(v, placeholders, f"{where}[{k!r}]")
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, placeholders, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (str, os.PathLike)):
        return portable(os.fspath(obj), placeholders, where=where)
    if hasattr(obj, "tolist") and not isinstance(obj, (int, float, bool)):  # NumPy / JAX scalars and arrays
        return _plain(obj.tolist(), placeholders, where)
    return obj


def default_command() -> str:
    """The command line of this process as a user would type it in the repository: `python <script> <args>`."""
    script = sys.argv[0] if sys.argv and sys.argv[0] else "-c"
    script = os.path.abspath(script) if os.path.isfile(script) else script  # made repository-relative on writing
    return "python " + " ".join(shlex.quote(a) for a in [script, *sys.argv[1:]])


def write_results(path: str | os.PathLike, results: Mapping[str, Any], *, command: str | None = None,
                  peak_gflops: float | None = None, placeholders: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Write `results` plus hardware facts, `command` (default: this process's) and `date` to `path` as JSON.

    The writer's keys (those of `hardware_info`, `command`, `date`) replace any of the same name in `results`, so
    a results file read back, updated and written again describes the latest run. `peak_gflops`: an fp32 matmul
    peak the script measured itself (else the cached measurement of this process's device). `placeholders` name
    more directories to hide, e.g. {"NANOGPT_DIR": args.nanogpt}. Returns the path written.
    """
    out = {**results, **hardware_info(peak_gflops), "command": command or default_command(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    path = pathlib.Path(path)
    write_json_atomic(path, _plain(out, placeholders), indent=1, ensure_ascii=False)
    return path
