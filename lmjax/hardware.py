"""What this process runs on: the CPU (down to its microarchitecture), the JAX devices and their peak FLOP/s.

Peak FLOP/s is the MFU denominator. On GPUs and TPUs it is the vendor's dense number for the device kind. On CPUs
no honest vendor number exists (it depends on cores, clocks and the BLAS XLA emits), so the peak is a measured
`jnp.dot`, cached on disk per machine, dtype, JAX version and XLA flags so only the first run pays for it.

The CPU's name alone does not say what it is: a cloud VM's /proc/cpuinfo often reads just "AMD EPYC" for Zen 4 and
Zen 5 alike, whose fp32 matmul peaks differ about 2x. `cpu_info` reads the x86 family and model numbers and names
the microarchitecture, and `hardware_summary` (the `hardware` line of every results file) carries them together
with the fp32 matmul peak measured in the same process.

Environment variables:
  LMJAX_PEAK_GFLOPS  use this many GFLOP/s per device as the peak (skips the table and the measurement).
  LMJAX_CACHE_DIR    where the measured peaks are cached (`matmul_peak.json`; see lmjax.runtime.cache_dir).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp

from lmjax.runtime import cache_dir, write_json_atomic

PEAK_ENV = "LMJAX_PEAK_GFLOPS"

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

# x86 microarchitectures by CPUID family and model (as /proc/cpuinfo prints them, decimal): AMD as
# (family, first model, last model, name), from AMD's revision guides; Intel family 6 as model -> name, from
# Intel's SDM and Linux's intel-family.h. Model 85 is three server generations told apart by stepping.
AMD_MICROARCHITECTURES: tuple[tuple[int, int, int, str], ...] = (
    (23, 0x00, 0x2F, "Zen/Zen+"),
    (23, 0x30, 0xFF, "Zen 2"),
    (25, 0x00, 0x0F, "Zen 3"),  # Milan
    (25, 0x10, 0x1F, "Zen 4"),  # Genoa
    (25, 0x20, 0x3F, "Zen 3"),  # Vermeer, Trento
    (25, 0x40, 0x4F, "Zen 3+"),  # Rembrandt
    (25, 0x50, 0x5F, "Zen 3"),  # Cezanne
    (25, 0x60, 0x7F, "Zen 4"),  # Raphael, Phoenix
    (25, 0xA0, 0xAF, "Zen 4"),  # Bergamo, Siena (Zen 4c cores)
    (26, 0x00, 0x4F, "Zen 5"),  # Turin, Turin Dense, Strix Point, Granite Ridge
    (26, 0x60, 0x7F, "Zen 5"),  # Krackan Point, Strix Halo
)
INTEL_FAMILY6_MICROARCHITECTURES: dict[int, str] = {
    **dict.fromkeys((60, 63, 69, 70), "Haswell"),
    **dict.fromkeys((61, 71, 79, 86), "Broadwell"),
    **dict.fromkeys((78, 94), "Skylake"),
    **dict.fromkeys((142, 158), "Kaby Lake/Coffee Lake"),
    **dict.fromkeys((165, 166), "Comet Lake"),
    **dict.fromkeys((106, 108, 125, 126), "Ice Lake"),
    **dict.fromkeys((140, 141), "Tiger Lake"),
    167: "Rocket Lake",
    **dict.fromkeys((151, 154), "Alder Lake"),
    **dict.fromkeys((183, 186, 191), "Raptor Lake"),
    **dict.fromkeys((170, 172), "Meteor Lake"),
    **dict.fromkeys((197, 198), "Arrow Lake"),
    189: "Lunar Lake",
    143: "Sapphire Rapids",
    207: "Emerald Rapids",
    **dict.fromkeys((173, 174), "Granite Rapids"),
    175: "Sierra Forest",
}
_VENDORS = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel", "HygonGenuine": "Hygon"}


# ------------------------------------------------------------------------------------------------------------ CPU


@dataclasses.dataclass(frozen=True)
class CpuInfo:
    """The host CPU as /proc/cpuinfo describes its first processor, and the cores this process may use."""

    name: str  # "model name", e.g. "AMD EPYC" or "Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    vendor: str | None  # "AMD", "Intel", ... (x86 only)
    family: int | None  # CPUID family and model, decimal as /proc/cpuinfo prints them (x86 only)
    model: int | None
    stepping: int | None
    microarchitecture: str | None  # "Zen 5", "Sapphire Rapids", ...; None when the numbers are not in the tables
    cores: int  # usable by this process (its affinity mask)
    total_cores: int  # on the host

    def describe(self) -> str:
        """The name with the microarchitecture and CPUID numbers, e.g. "AMD EPYC (Zen 5, family 26 model 2)"; just
        the name when no family and model are known."""
        if self.family is None:
            return self.name
        ids = f"family {self.family} model {self.model}"
        return f"{self.name} ({self.microarchitecture}, {ids})" if self.microarchitecture else f"{self.name} ({ids})"


def microarchitecture(vendor: str | None, family: int | None, model: int | None,
                      stepping: int | None = None) -> str | None:
    """The microarchitecture of an x86 CPU from its vendor and CPUID family/model/stepping, or None if unknown."""
    if family is None or model is None:
        return None
    if vendor == "AMD":
        return next((name for f, lo, hi, name in AMD_MICROARCHITECTURES if f == family and lo <= model <= hi), None)
    if vendor == "Intel" and family == 6:
        if model == 85:  # Xeon Scalable gens 1-3 share the model; steppings 0-4, 5-7 and 10-11
            return None if stepping is None else ("Skylake" if stepping <= 4 else "Cascade Lake" if stepping <= 7
                                                  else "Cooper Lake")
        return INTEL_FAMILY6_MICROARCHITECTURES.get(model)
    return None


def _n_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_info(cpuinfo: str | None = None) -> CpuInfo:
    """The host CPU, parsed from `cpuinfo` (the text of /proc/cpuinfo; read from the file when None).

    Off Linux, or where the file lacks the fields (e.g. ARM), the name falls back to `platform.processor()` and
    the family, model and microarchitecture are None.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())

    def number(key: str) -> int | None:
        return int(fields[key]) if fields.get(key, "").isdigit() else None

    vendor = _VENDORS.get(fields.get("vendor_id", ""), fields.get("vendor_id") or None)
    family, model, stepping = number("cpu family"), number("model"), number("stepping")
    return CpuInfo(name=fields.get("model name") or platform.processor() or platform.machine(), vendor=vendor,
                   family=family, model=model, stepping=stepping,
                   microarchitecture=microarchitecture(vendor, family, model, stepping),
                   cores=_n_cores(), total_cores=os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------------------ peaks


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


def peak_cache_path() -> str:
    return os.path.join(cache_dir(), "matmul_peak.json")


def _peak_key(device: Any, dtype: Any) -> str:
    # XLA flags belong in the key (the YNN fusion flag alone moves the bf16 CPU matmul peak by 2.5x), except the
    # simulated device count: one device's matmul still runs on all of the host's cores. The CPU's family and
    # model do too: two generations may share a model name.
    flags = " ".join(sorted(f for f in os.environ.get("XLA_FLAGS", "").split()
                            if not f.startswith("--xla_force_host_platform_device_count")))
    if device.platform == "cpu":
        cpu = cpu_info()
        hw = f"{cpu.describe()} x{cpu.cores}"
    else:
        hw = device.device_kind
    return f"{device.platform}|{hw}|{_dtype_name(dtype)}|jax {jax.__version__}|{flags}"


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


_MEASURED: dict[str, float] = {}  # GFLOP/s per cache key, so a process measures at most once


def measured_peak_gflops(dtype: Any = "float32", device: Any = None) -> float:
    """The measured matmul GFLOP/s of `device` (default: the first JAX device); on CPU, of the whole host.

    Measured at most once per process and cached in `peak_cache_path()` (delete an entry to re-measure). A peak
    measured while the 1-minute load average exceeded the core count is marked busy and measured again by the next
    process, which keeps the better of the two.
    """
    device = device or jax.devices()[0]
    key = _peak_key(device, dtype)
    if key not in _MEASURED:
        _MEASURED[key] = _cached_measurement(key, dtype, device)
    return _MEASURED[key]


def device_peak_flops(dtype: Any = "float32", device: Any = None) -> float:
    """Peak FLOP/s of one device: the MFU denominator, to multiply by the number of devices.

    $LMJAX_PEAK_GFLOPS if set; else the vendor table for a known GPU/TPU kind; else (CPUs, unknown accelerators)
    `measured_peak_gflops`. Simulated CPU devices (--xla_force_host_platform_device_count) share the host's cores,
    so each gets its share.
    """
    if os.environ.get(PEAK_ENV):
        return float(os.environ[PEAK_ENV]) * 1e9
    device = device or jax.devices()[0]
    if device.platform != "cpu" and (peak := vendor_peak_flops(device.device_kind, dtype)) is not None:
        return peak
    share = len(jax.local_devices(backend="cpu")) if device.platform == "cpu" else 1
    return measured_peak_gflops(dtype, device) * 1e9 / share


def _cached_measurement(key: str, dtype: Any, device: Any) -> float:
    path = peak_cache_path()
    old = _read_json(path).get(key)
    old = old if isinstance(old, dict) and isinstance(old.get("gflops"), (int, float)) else None
    if old is not None and not old.get("busy"):
        return float(old["gflops"])
    # Other load only ever slows a run down, so take the best run, and while the machine is busy re-measure in
    # later processes (keeping the best so far) rather than fixing a throttled number for good.
    load = os.getloadavg()[0]
    gflops = measure_matmul_peak(dtype, device=device, statistic="best")
    if old is not None and old["gflops"] > gflops:
        return float(old["gflops"])
    entry = {"gflops": round(gflops, 3), "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
             "loadavg_1m": round(load, 2), "busy": device.platform == "cpu" and load > _n_cores()}
    write_json_atomic(path, {**_read_json(path), key: entry}, indent=1, sort_keys=True)
    return entry["gflops"]


# ------------------------------------------------------------------------------------------------- description


def hardware_info(peak_gflops: float | None = None) -> dict[str, Any]:
    """Flat facts for a results file: cpu, cpu_vendor, cpu_family, cpu_model, microarchitecture, cpu_cores (usable
    by this process), memory_gib, jax_devices ("8 x TPU v4"), jax_platform, jax_version, matmul_peak_gflops (fp32,
    first device) and load_avg_1m, plus `hardware`, the same in one line.

    The peak is `peak_gflops` when the caller measured it, else $LMJAX_PEAK_GFLOPS (the line says so), else
    `measured_peak_gflops` (cached; measured now if this machine has no entry yet, about a second on a CPU).
    """
    cpu, devices = cpu_info(), jax.devices()
    note = ""
    if peak_gflops is None:
        if os.environ.get(PEAK_ENV):
            peak_gflops, note = float(os.environ[PEAK_ENV]), f" (from {PEAK_ENV})"
        else:
            peak_gflops = measured_peak_gflops("float32", devices[0])
    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    kind = devices[0].device_kind
    info = {"cpu": cpu.name, "cpu_vendor": cpu.vendor, "cpu_family": cpu.family, "cpu_model": cpu.model,
            "microarchitecture": cpu.microarchitecture, "cpu_cores": cpu.cores, "memory_gib": memory_gib,
            "jax_devices": f"{len(devices)} x {kind}", "jax_platform": devices[0].platform,
            "jax_version": jax.__version__, "matmul_peak_gflops": round(peak_gflops, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2)}
    accel = "" if devices[0].platform == "cpu" else f", {len(devices)} x {kind}"
    memory = f", {memory_gib:.0f} GiB" if memory_gib else ""
    info["hardware"] = (f"{cpu.describe()}, {cpu.cores} of {cpu.total_cores} cores{memory}{accel}, fp32 matmul peak "
                        f"{peak_gflops:.0f} GFLOP/s{note}, jax {jax.__version__} on {devices[0].platform}, "
                        f"load average {info['load_avg_1m']:.1f}")
    return info


def hardware_summary(peak_gflops: float | None = None) -> str:
    """One line for results files, e.g. "AMD EPYC (Zen 5, family 26 model 2), 2 of 2 cores, 24 GiB, fp32 matmul
    peak 342 GFLOP/s, jax 0.10.2 on cpu, load average 1.3" (accelerators add ", 8 x TPU v4" after the memory; the
    peak is then the first accelerator's). See `hardware_info`."""
    return hardware_info(peak_gflops)["hardware"]
