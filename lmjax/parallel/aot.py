"""Ahead-of-time compilation for TPU slices from any host, and what the compiled program will cost there.

With the `libtpu` wheel installed (no TPU needed), `tpu_topology_devices("v5e:2x4")` returns device descriptions of
that slice; build a mesh over them, pass `jax.ShapeDtypeStruct(shape, dtype, sharding=...)` as arguments and
`compile_report` runs the real TPU compiler, reporting per-device memory (does it fit in HBM?), FLOPs and a
roofline step time:

    devices = tpu_topology_devices("v5e:2x4")
    mesh = jax.make_mesh((2, 4), ("data", "tensor"), devices=devices, axis_types=(AxisType.Auto,) * 2)
    x = jax.ShapeDtypeStruct((1024, 4096), jnp.bfloat16, sharding=NamedSharding(mesh, P("data", None)))
    report = compile_report(step_fn, (state, x), donate_argnums=(0,))

Accepted topology names (chips = JAX devices; v4 and v5p chips are megacore, one device of two TensorCores):

  generation:shape      v4:2x2x1 (4 chips), v4:2x2x4 (16), v5p:2x2x1 (4), v5e:2x4 (8), v6e:4x4 (16), ...
                        v4/v5p shapes are 3-D (XxYxZ), v5e/v6e 2-D (XxY). Aliases: v5litepod = v5e, v6 = v6e.
  GCP accelerator type  v4-32 (TensorCores: 16 chips, 2x2x4), v5p-8 (4 chips), v5litepod-8 / v5e-8 and v6e-8
                        (chips: 2x4), for the standard slice sizes in `_SLICE_SHAPES`.

Default chips_per_host_bounds (chips per TPU VM): v4 and v5p (2, 2, 1), 4 chips per host; v5e and v6e slices of up
to 8 chips are one host (v5litepod-8 is 2x4 on one VM), larger ones (2, 2, 1). Host bounds only decide which device
belongs to which process; the compiled program is the same.

On a host with no TPU, libtpu prints warnings about TPU_ACCELERATOR_TYPE and worker hostnames: harmless here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from typing import Any, Callable, Sequence

import jax

from lmjax.hardware import vendor_peak_flops

GiB = 1024**3


@dataclasses.dataclass(frozen=True)
class TpuChip:
    """One TPU generation: what the projection needs and how libtpu names its topologies."""

    device_kind: str  # as JAX reports it
    bf16_tflops: float  # dense peak per chip (= per JAX device)
    hbm_gib: float
    hbm_gbps: float  # HBM bandwidth, GB/s
    dims: int  # dimensionality of the topology name (v4: 2x2x4, v5e: 2x4)
    chip_config: str  # libtpu chip config: v4 must be asked for megacore, as JAX runs it on real v4 VMs
    max_single_host_chips: int  # slices up to this size are one VM


TPU_CHIPS: dict[str, TpuChip] = {
    "v4": TpuChip("TPU v4", 275.0, 32.0, 1200.0, 3, "megacore", 4),
    "v5e": TpuChip("TPU v5 lite", 197.0, 16.0, 819.0, 2, "default", 8),
    "v5p": TpuChip("TPU v5", 459.0, 95.0, 2765.0, 3, "default", 4),
    "v6e": TpuChip("TPU v6 lite", 918.0, 32.0, 1640.0, 2, "default", 8),
}
_ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e", "trillium": "v6e"}

# Standard slice shapes by chip count.
_SLICE_SHAPES = {
    3: {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8", 512: "8x8x8",
        1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"},
    2: {1: "1x1", 4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"},
}
# In accelerator-type names, v4-N and v5p-N count TensorCores (2 per chip); v5e-N and v6e-N count chips.
_CORES_PER_CHIP_IN_NAME = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}


def parse_topology(name: str) -> tuple[str, tuple[int, ...]]:
    """("v5e:2x4" | "v5litepod-8" | "v4-32" ...) -> (generation, chip grid shape), e.g. ("v4", (2, 2, 4))."""
    accepted = "'<gen>:<XxY[xZ]>' (v4:2x2x4, v5e:2x4) or an accelerator type (v4-32, v5litepod-8), gen in " + \
        ", ".join(TPU_CHIPS)
    m = re.fullmatch(r"\s*([a-z0-9]+)\s*([:-])\s*([0-9x]+)\s*", name.lower())
    gen = _ALIASES.get(m.group(1), m.group(1)) if m else None
    if gen not in TPU_CHIPS:
        raise ValueError(f"unknown TPU topology {name!r}; expected {accepted}")
    chip = TPU_CHIPS[gen]
    if m.group(2) == "-":
        chips, rest = divmod(int(m.group(3)), _CORES_PER_CHIP_IN_NAME[gen])
        if rest or chips not in _SLICE_SHAPES[chip.dims]:
            known = ", ".join(f"{gen}-{n * _CORES_PER_CHIP_IN_NAME[gen]}" for n in _SLICE_SHAPES[chip.dims])
            raise ValueError(f"no standard {gen} slice {name!r}; known: {known}")
        shape_text = _SLICE_SHAPES[chip.dims][chips]
    else:
        shape_text = m.group(3)
    shape = tuple(int(s) for s in shape_text.split("x") if s)
    if len(shape) != chip.dims or min(shape) < 1:
        raise ValueError(f"{gen} topologies are {chip.dims}-D (e.g. {gen}:{_SLICE_SHAPES[chip.dims][8]}), got {name!r}")
    return gen, shape


def default_chips_per_host_bounds(gen: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """Chips per TPU VM along each axis for a slice of `gen` with chip grid `shape`."""
    shape3 = (*shape, 1, 1)[:3]
    n_chips = shape3[0] * shape3[1] * shape3[2]
    if n_chips <= TPU_CHIPS[gen].max_single_host_chips:
        return shape3  # the whole slice is one VM
    return (min(2, shape3[0]), min(2, shape3[1]), 1)


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def tpu_topology_devices(topology_name: str, *, chips_per_host_bounds: Sequence[int] | None = None,
                         num_slices: int = 1) -> list[Any]:
    """Device descriptions of a TPU slice (one per chip), for compiling without the hardware. Needs `libtpu`."""
    try:
        import libtpu  # noqa: F401  (the TPU compiler; an optional extra)
    except ImportError as e:
        raise ImportError("compiling for TPU needs the libtpu wheel: pip install -e '.[tpu]'") from e
    from jax.experimental import topologies

    gen, shape = parse_topology(topology_name)
    bounds = tuple(chips_per_host_bounds or default_chips_per_host_bounds(gen, shape))
    # libtpu takes a per-host lockfile meant for real chips; any other JAX process on this host holds it once
    # libtpu is installed. Compiling touches no chip, so skip the lock for this call only.
    with _env(ALLOW_MULTIPLE_LIBTPU_LOAD="1"):
        topo = topologies.get_topology_desc(
            platform="tpu", topology_name=f"{gen}:{'x'.join(map(str, shape))}",
            chip_config_name=TPU_CHIPS[gen].chip_config, chips_per_host_bounds=bounds, num_slices=num_slices)
    return list(topo.devices)


REPORT_KEYS = ("error", "device_kind", "n_devices", "argument_bytes", "output_bytes", "alias_bytes", "temp_bytes",
               "generated_code_bytes", "total_bytes", "hbm_bytes", "fits_in_hbm", "flops", "bytes_accessed",
               "peak_flops", "compute_s", "memory_s", "xla_estimate_s", "step_s", "mfu")


def _tpu_chip(device_kind: str) -> TpuChip | None:
    return next((c for c in TPU_CHIPS.values() if c.device_kind.lower() == device_kind.strip().lower()), None)


def compile_report(fn: Callable, abstract_args: Sequence[Any], *, donate_argnums: int | Sequence[int] = (),
                   flops: float | None = None, peak_flops: float | None = None,
                   hbm_bytes: float | None = None) -> dict[str, Any]:
    """Compile `fn(*abstract_args)` ahead of time and report per-device memory, FLOPs and a projected step time.

    `fn` is a plain function (jitted here with `donate_argnums`) or an already `jax.jit`-ed one. `abstract_args`
    are pytrees of `jax.ShapeDtypeStruct` (with shardings for a multi-device program). All numbers are per device.

    XLA's cost analysis counts a loop body once (a `lax.scan` over layers or steps is undercounted); pass `flops`
    (model FLOPs per device per call) to override. `peak_flops` (bf16 FLOP/s per device) and `hbm_bytes` default
    to the TPU chip tables / vendor table; for other devices the projection fields are None unless given.

    Returns a flat dict (`REPORT_KEYS`): error (None, or the compiler's message when the program does not fit in
    HBM: then fits_in_hbm is False and the numbers are None), device_kind, n_devices; argument/output/alias/temp/
    generated_code/total_bytes (total = argument + output - alias + temp + code: what a step needs resident),
    hbm_bytes, fits_in_hbm; flops, bytes_accessed, peak_flops; compute_s (flops / peak), memory_s (bytes / HBM
    bandwidth), xla_estimate_s (the TPU compiler's own estimate, when it gives one), step_s (the largest of these)
    and mfu = compute_s / step_s.
    """
    if hasattr(fn, "lower"):
        if donate_argnums not in ((), None):
            raise ValueError("fn is already jitted: set donate_argnums in its jax.jit instead")
        jitted = fn
    else:
        jitted = jax.jit(fn, donate_argnums=donate_argnums)
    lowered = jitted.lower(*abstract_args)
    try:
        compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
        # The TPU compiler refuses a program whose buffers exceed HBM: that is an answer, not a failure.
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        arg_shardings = [getattr(a, "sharding", None) for a in jax.tree.leaves(abstract_args)]
        return _oom_report(_devices(arg_shardings), str(e), hbm_bytes)

    devices = _devices(jax.tree.leaves((compiled.input_shardings, compiled.output_shardings)))
    device_kind = next(iter(devices)).device_kind
    chip = _tpu_chip(device_kind)

    mem = compiled.memory_analysis()
    sizes = {name: int(getattr(mem, f"{name}_size_in_bytes", 0) or 0)
             for name in ("argument", "output", "alias", "temp", "generated_code")}
    total = sizes["argument"] + sizes["output"] - sizes["alias"] + sizes["temp"] + sizes["generated_code"]
    if hbm_bytes is None and chip is not None:
        hbm_bytes = chip.hbm_gib * GiB

    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})  # older JAX: a list
    flops = float(cost.get("flops", 0.0)) if flops is None else float(flops)
    bytes_accessed = float(cost.get("bytes accessed", 0.0))
    if peak_flops is None:
        peak_flops = vendor_peak_flops(device_kind, "bfloat16")

    compute_s = flops / peak_flops if peak_flops else None
    memory_s = bytes_accessed / (chip.hbm_gbps * 1e9) if chip is not None else None
    xla_s = float(cost["optimal_seconds"]) if cost.get("optimal_seconds", 0) > 0 else None
    estimates = [t for t in (compute_s, memory_s, xla_s) if t is not None]
    step_s = max(estimates) if estimates else None
    return {
        "error": None,
        "device_kind": device_kind,
        "n_devices": len(devices),
        **{f"{name}_bytes": v for name, v in sizes.items()},
        "total_bytes": total,
        "hbm_bytes": hbm_bytes,
        "fits_in_hbm": None if hbm_bytes is None else total <= hbm_bytes,
        "flops": flops,
        "bytes_accessed": bytes_accessed,
        "peak_flops": peak_flops,
        "compute_s": compute_s,
        "memory_s": memory_s,
        "xla_estimate_s": xla_s,
        "step_s": step_s,
        "mfu": compute_s / step_s if compute_s is not None and step_s else None,
    }


def _devices(shardings: Sequence[Any]) -> set[Any]:
    """The devices a program runs on, from its shardings (the default device when it has none)."""
    return next((s.device_set for s in shardings if hasattr(s, "device_set")), {jax.devices()[0]})


def _oom_report(devices: set[Any], message: str, hbm_bytes: float | None) -> dict[str, Any]:
    device_kind = next(iter(devices)).device_kind
    chip = _tpu_chip(device_kind)
    return {
        **dict.fromkeys(REPORT_KEYS),
        "error": message.strip().splitlines()[0],
        "device_kind": device_kind,
        "n_devices": len(devices),
        "hbm_bytes": hbm_bytes if hbm_bytes is not None else (chip.hbm_gib * GiB if chip else None),
        "fits_in_hbm": False,
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable multi-line summary of a `compile_report` dict."""
    def gib(b):
        return "?" if b is None else f"{b / GiB:.3f} GiB"

    def ms(t):
        return "?" if t is None else f"{t * 1e3:.3f} ms"

    r = report
    if r["error"]:
        return f"{r['n_devices']} x {r['device_kind']}: DOES NOT FIT in {gib(r['hbm_bytes'])} HBM\n  {r['error']}"
    lines = [
        f"{r['n_devices']} x {r['device_kind']}  (per device)",
        f"  memory   total {gib(r['total_bytes'])} of {gib(r['hbm_bytes'])} HBM"
        f"{'' if r['fits_in_hbm'] is None else ('  fits' if r['fits_in_hbm'] else '  DOES NOT FIT')}",
        f"           args {gib(r['argument_bytes'])}, out {gib(r['output_bytes'])}, aliased {gib(r['alias_bytes'])},"
        f" temp {gib(r['temp_bytes'])}, code {gib(r['generated_code_bytes'])}",
        f"  compute  {r['flops'] / 1e9:.3f} GFLOP, {r['bytes_accessed'] / 1e9:.3f} GB accessed",
        f"  step     {ms(r['step_s'])} (compute {ms(r['compute_s'])}, memory {ms(r['memory_s'])},"
        f" XLA {ms(r['xla_estimate_s'])})" + ("" if r["mfu"] is None else f", MFU {r['mfu']:.1%}"),
    ]
    return "\n".join(lines)
