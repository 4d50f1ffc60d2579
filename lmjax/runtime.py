"""The process's runtime set-up: lmjax's cache directory, JAX's persistent compilation cache, the environment
that makes CPU training fast (XLA's YNNPACK fusions, tcmalloc), and `run_script`, the entry point of the scripts in
experiments/ and benchmarks/.

Environment variables:
  LMJAX_CACHE_DIR    base cache directory (default `$XDG_CACHE_HOME/lmjax`, i.e. `~/.cache/lmjax`).
  LMJAX_JAX_CACHE    persistent compilation cache directory; "0", "off", "false" or "no" disable it.
  LMJAX_CPU_FAST     "0": no YNN fusion flag (`use_ynn_fusion`).
  LMJAX_TCMALLOC     "0": no tcmalloc re-exec (`reexec_with_tcmalloc`).
"""

from __future__ import annotations

import glob
import json
import os
import sys
import tempfile
from typing import Callable

JAX_CACHE_ENV = "LMJAX_JAX_CACHE"
CACHE_DIR_ENV = "LMJAX_CACHE_DIR"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
_OFF = {"0", "off", "false", "no", "none"}


def cache_dir() -> str:
    """lmjax's cache directory: $LMJAX_CACHE_DIR, else $XDG_CACHE_HOME/lmjax, else ~/.cache/lmjax."""
    if os.environ.get(CACHE_DIR_ENV):
        return os.path.expanduser(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lmjax")


def write_json_atomic(path: str | os.PathLike, data, **dump_kwargs) -> None:
    """Write `data` as JSON to `path` through a temporary file in the same directory and a rename, so a reader (or
    a concurrent writer) never sees a half-written file; the last writer wins."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, **dump_kwargs)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache for this process; returns its directory, or None if disabled.

    Directory: `path`, else $LMJAX_JAX_CACHE, else `cache_dir()/jax_cache`; "0"/"off" disables the cache. Every
    program is cached, however quick to compile or small: on CPU a small GPT step compiles in ~1 s, which is
    exactly what repeated short runs and tests pay for.
    """
    import jax  # here, not at the top: a script's --help and the CPU set-up need no JAX

    path = path if path is not None else os.environ.get(JAX_CACHE_ENV) or os.path.join(cache_dir(), "jax_cache")
    if path.strip().lower() in _OFF:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    path = os.path.abspath(os.path.expanduser(path))
    os.makedirs(path, exist_ok=True)
    previous = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # -1: no size floor, no filesystem override
    if previous and previous != path:
        # The cache binds to a directory at the first compile; rebind it to the new one.
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()
    return path


def find_tcmalloc() -> str | None:
    """Path of a tcmalloc shared library to LD_PRELOAD (Debian: libtcmalloc-minimal4 or google-perftools)."""
    dirs = ["/usr/lib/*-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib", "/lib/*-linux-gnu"]
    for name in ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"):  # minimal first: no heap-profiler hooks
        for d in dirs:
            hits = sorted(glob.glob(os.path.join(d, name)))
            if hits:
                return hits[0]
    return None


def cpu_fast_path(environ: dict[str, str] | None = None, *, ynn: bool = True, tcmalloc: bool = True) -> dict[str, str]:
    """Environment changes that make CPU training fast; returns only the variables to set (merged with `environ`).

    - XLA_FLAGS += the YNNPACK dot/reduce fusion flag: removes slow transposes in weight-gradient matmuls. It must
      be set before JAX initializes its CPU backend. It slows bf16 matmuls a lot on CPU: use it with fp32.
    - LD_PRELOAD += libtcmalloc (when installed): glibc malloc page-faults fresh memory on every jit call. It only
      takes effect in a process started with it, i.e. a re-exec or a subprocess.

    Applying it is the caller's choice, e.g. `os.environ.update(cpu_fast_path())` before importing JAX's backend.
    """
    env = os.environ if environ is None else environ
    changes: dict[str, str] = {}
    flags = env.get("XLA_FLAGS", "")
    if ynn and "xla_cpu_experimental_ynn_fusion_type" not in flags:
        changes["XLA_FLAGS"] = f"{flags} {YNN_FLAG}".strip()
    lib = find_tcmalloc() if tcmalloc else None
    preload = env.get("LD_PRELOAD", "")
    if lib and "tcmalloc" not in preload:
        changes["LD_PRELOAD"] = f"{lib} {preload}".strip()  # ld.so accepts space- or colon-separated lists
    return changes


def use_ynn_fusion() -> None:
    """Turn on XLA's YNNPACK dot/reduce fusions for fp32 runs (no effect off CPU); `lmjax train` and the experiments
    call it before JAX starts its backend, when XLA reads the flag.

    It removes slow transposes from the weight-gradient matmuls (about 20% less CPU per GPT step here, same losses)
    but slows bf16 matmuls, hence fp32 only. LMJAX_CPU_FAST=0 turns it off.
    """
    if os.environ.get("LMJAX_CPU_FAST", "1") != "0":
        os.environ.update(cpu_fast_path(tcmalloc=False))


def reexec_with_tcmalloc(exec_argv: list[str]) -> None:
    """Restart the process as `exec_argv` with tcmalloc preloaded when it is installed and not yet loaded.

    glibc's malloc page-faults fresh memory on every jit call; tcmalloc reuses it (about 30% less CPU per small GPT
    step here). Only a process started with LD_PRELOAD gets it, hence the re-exec. LMJAX_TCMALLOC=0 turns it off.
    """
    if os.environ.get("LMJAX_TCMALLOC", "1") == "0" or "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = find_tcmalloc()
    if lib:
        env = {**os.environ, "LD_PRELOAD": f"{lib} {os.environ.get('LD_PRELOAD', '')}".strip()}
        os.execve(exec_argv[0], exec_argv, env)


def run_script(main: Callable[[], object]) -> None:
    """Run a script's `main` as the `lmjax` command runs its commands: lmjax's user errors (a bad config value,
    missing data, a broken checkpoint) end the process with their one line, "error: ...", and exit status 2."""
    try:
        main()
    except Exception as e:
        from lmjax.config import ConfigError
        from lmjax.data.files import DataError
        from lmjax.train.checkpoint import CheckpointError

        if isinstance(e, (ConfigError, DataError, CheckpointError)):
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        raise
