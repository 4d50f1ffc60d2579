"""Peak FLOP/s for MFU, JAX's persistent compilation cache, and the environment that makes CPU training fast.

MFU = achieved model FLOP/s / peak FLOP/s. On GPUs and TPUs the peak is the vendor's dense number for the device
kind. On CPUs no honest vendor number exists (it depends on cores, clocks and the BLAS XLA emits), so the peak is a
measured `jnp.dot`, cached on disk per machine, dtype, JAX version and XLA flags so only the first run pays for it.

Environment variables:
  LMJAX_PEAK_GFLOPS  use this many GFLOP/s per device as the peak (skips the table and the measurement).
  LMJAX_JAX_CACHE    persistent compilation cache directory; "0", "off", "false" or "no" disable it.
  LMJAX_CACHE_DIR    base cache directory (default `$XDG_CACHE_HOME/lmjax`, i.e. `~/.cache/lmjax`).
"""

from __future__ import annotations

import glob
import json
import math
import os
import platform
import re
import statistics
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp

PEAK_ENV = "LMJAX_PEAK_GFLOPS"
JAX_CACHE_ENV = "LMJAX_JAX_CACHE"
CACHE_DIR_ENV = "LMJAX_CACHE_DIR"
YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot,reduce"
_OFF = {"0", "off", "false", "no", "none"}

# Dense (no sparsity) vendor peaks in TFLOP/s per JAX device, matched in order against the lower-cased
# `device_kind`. "float32" is what a default-precision f32 `jnp.dot` runs at: TF32 tensor cores on Ampere and
# newer GPUs, bf16 MXU passes on TPUs. TPU v4/v5p megacore chips are one JAX device each, so per device = per chip.
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    (r"h100.*pcie", {"bfloat16": 756.0, "float16": 756.0, "float32": 378.0}),
    (r"h100.*nvl", {"bfloat16": 835.0, "float16": 835.0, "float32": 418.0}),
    (r"h100|h200|h800", {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7}),  # SXM; GH200 matches h200
    (r"a100", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0}),
    # No bf16 tensor cores on Volta: bf16 dots run on the fp32 units.
    (r"v100.*pcie", {"bfloat16": 14.0, "float16": 112.0, "float32": 14.0}),
    (r"v100", {"bfloat16": 15.7, "float16": 125.0, "float32": 15.7}),
    (r"\bl4\b", {"bfloat16": 121.0, "float16": 121.0, "float32": 60.0}),
    (r"tpu v6 lite|tpu v6e|trillium", {"bfloat16": 918.0, "float32": 918.0}),
    (r"tpu v5 lite|tpu v5e", {"bfloat16": 197.0, "float32": 197.0}),
    (r"tpu v5p|tpu v5$", {"bfloat16": 459.0, "float32": 459.0}),
    (r"tpu v4$", {"bfloat16": 275.0, "float32": 275.0}),
)


def _dtype_name(dtype: Any) -> str:
    return jnp.dtype(dtype).name


def vendor_peak_flops(device_kind: str, dtype: Any = "float32") -> float | None:
    """Vendor dense peak FLOP/s per device for a `device_kind` (e.g. "NVIDIA H100 80GB HBM3"), or None if unknown."""
    kind, name = device_kind.strip().lower(), _dtype_name(dtype)
    for pattern, peaks in PEAK_TFLOPS:
        if re.search(pattern, kind):
            return peaks[name] * 1e12 if name in peaks else None
    return None


def measure_matmul_peak(dtype: Any = "float32", n: int = 2048, repeats: int = 7, device: Any = None,
                        min_call_s: float = 0.02, statistic: str = "median") -> float:
    """GFLOP/s of a jitted n x n `jnp.dot`: the median (or "best") of `repeats` timed calls after a warm-up call.

    A call chains enough dependent matmuls (`a = a @ b`, which XLA cannot fold) to last `min_call_s`, so dispatch
    overhead does not dominate on fast accelerators; on a CPU one 2048 matmul already takes tens of ms.
    """
    if statistic not in ("median", "best"):
        raise ValueError(f"statistic must be 'median' or 'best', got {statistic!r}")
    device = device or jax.devices()[0]
    ka, kb = jax.random.split(jax.random.key(0))
    # b ~ N(0, 1/n) keeps the chained product's scale roughly constant, so nothing overflows.
    a = jax.device_put(jax.random.normal(ka, (n, n), jnp.float32).astype(dtype), device)
    b = jax.device_put((jax.random.normal(kb, (n, n), jnp.float32) / math.sqrt(n)).astype(dtype), device)

    def timed(fn) -> list[float]:
        fn(a, b).block_until_ready()  # compile and warm up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(a, b).block_until_ready()
            times.append(time.perf_counter() - t0)
        return times

    iters, times = 1, timed(jax.jit(jnp.dot))
    if statistics.median(times) < min_call_s:
        iters = min(1000, math.ceil(min_call_s / max(min(times), 1e-7)))
        chained = jax.jit(lambda x, y: jax.lax.fori_loop(0, iters, lambda _, z: jnp.dot(z, y), x))
        times = timed(chained)
    seconds = statistics.median(times) if statistic == "median" else min(times)
    return 2.0 * n**3 * iters / seconds / 1e9


def cache_dir() -> str:
    """lmjax's cache directory: $LMJAX_CACHE_DIR, else $XDG_CACHE_HOME/lmjax, else ~/.cache/lmjax."""
    if os.environ.get(CACHE_DIR_ENV):
        return os.path.expanduser(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lmjax")


def peak_cache_path() -> str:
    return os.path.join(cache_dir(), "matmul_peak.json")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _n_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def hardware_summary() -> str:
    """One line for results files: CPU model and cores usable by this process, the JAX devices (kind and count,
    for accelerators), the JAX version and the 1-minute load average."""
    devices = jax.devices()
    accel = "" if devices[0].platform == "cpu" else f", {len(devices)} x {devices[0].device_kind}"
    return (f"{_cpu_model()}, {_n_cores()} of {os.cpu_count()} cores{accel}, jax {jax.__version__} on "
            f"{devices[0].platform}, load average {os.getloadavg()[0]:.1f}")


def _peak_key(device: Any, dtype: Any) -> str:
    # XLA flags belong in the key (the YNN fusion flag alone moves the bf16 CPU matmul peak by 2.5x), except the
    # simulated device count: one device's matmul still runs on all of the host's cores.
    flags = " ".join(sorted(f for f in os.environ.get("XLA_FLAGS", "").split()
                            if not f.startswith("--xla_force_host_platform_device_count")))
    hw = f"{_cpu_model()} x{_n_cores()}" if device.platform == "cpu" else device.device_kind
    return f"{device.platform}|{hw}|{_dtype_name(dtype)}|jax {jax.__version__}|{flags}"


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json_atomic(path: str, data: dict) -> None:
    # Write-then-rename: concurrent processes never see a half-written file (last writer wins, which is harmless).
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


_MEASURED: dict[str, float] = {}  # GFLOP/s per cache key, so a process measures at most once


def device_peak_flops(dtype: Any = "float32", device: Any = None) -> float:
    """Peak FLOP/s of one device: the MFU denominator, to multiply by the number of devices.

    $LMJAX_PEAK_GFLOPS if set; else the vendor table for a known GPU/TPU kind; else (CPUs, unknown accelerators)
    a measured matmul peak, cached in `peak_cache_path()` (delete an entry to re-measure). A peak measured while
    the 1-minute load average exceeded the core count is marked busy and measured again by the next process.
    Simulated CPU devices (--xla_force_host_platform_device_count) share the host's cores, so each gets its share.
    """
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]) * 1e9
    device = device or jax.devices()[0]
    if device.platform != "cpu" and (peak := vendor_peak_flops(device.device_kind, dtype)) is not None:
        return peak
    key = _peak_key(device, dtype)
    if key not in _MEASURED:
        _MEASURED[key] = _cached_measurement(key, dtype, device)
    share = len(jax.local_devices(backend="cpu")) if device.platform == "cpu" else 1
    return _MEASURED[key] * 1e9 / share


def _cached_measurement(key: str, dtype: Any, device: Any) -> float:
    path = peak_cache_path()
    old = _read_json(path).get(key)
    old = old if isinstance(old, dict) and isinstance(old.get("gflops"), (int, float)) else None
    if old is not None and not old.get("busy"):
        return float(old["gflops"])
    # Other load only ever slows a run down, so take the best run, and while the machine is busy re-measure in
    # later processes (keeping the best so far) rather than fixing a throttled number for good.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    gflops = measure_matmul_peak(dtype, device=device, statistic="best")
    if old is not None and old["gflops"] > gflops:
        return float(old["gflops"])
    entry = {"gflops": round(gflops, 3), "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "loadavg_1m": round(load, 2), "busy": device.platform == "cpu" and load > _n_cores()}
    _write_json_atomic(path, {**_read_json(path), key: entry})
    return entry["gflops"]


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float, n_devices: int = 1) -> float:
    """Model FLOPs utilization in [0, 1]: achieved FLOP/s over the peak of all `n_devices` devices.

    Clipped at 1 because a CPU peak measured while the machine was busy can undershoot what training later reaches.
    """
    if peak_flops <= 0 or n_devices < 1:
        raise ValueError(f"need peak_flops > 0 and n_devices >= 1, got {peak_flops} and {n_devices}")
    if flops_per_token < 0 or tokens_per_s < 0:
        raise ValueError(f"need flops_per_token, tokens_per_s >= 0, got {flops_per_token} and {tokens_per_s}")
    return min(1.0, flops_per_token * tokens_per_s / (peak_flops * n_devices))


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache for this process; returns its directory, or None if disabled.

    Directory: `path`, else $LMJAX_JAX_CACHE, else `cache_dir()/jax_cache`; "0"/"off" disables the cache. Every
    program is cached, however quick to compile or small: on CPU a small GPT step compiles in ~1 s, which is
    exactly what repeated short runs and tests pay for.
    """
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
