"""Ahead-of-time compilation reports, on CPU and (with the optional libtpu wheel) for a TPU v5e slice."""

import importlib.util

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from lmjax.parallel import aot

needs_libtpu = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                  reason="libtpu not installed (optional: pip install -e '.[tpu]')")


@pytest.mark.parametrize("name,expected", [
    ("v5e:2x4", ("v5e", (2, 4))),
    ("v5litepod-8", ("v5e", (2, 4))),
    ("v6e-16", ("v6e", (4, 4))),
    ("v4:2x2x4", ("v4", (2, 2, 4))),
    ("v4-32", ("v4", (2, 2, 4))),  # v4-N counts TensorCores: 16 chips
    ("v5p-8", ("v5p", (2, 2, 1))),
])
def test_parse_topology(name, expected):
    assert aot.parse_topology(name) == expected


@pytest.mark.parametrize("name", ["v5e:2x2x2", "v4:2x4", "v7:2x2", "v4-30", "v5e", "2x4"])
def test_parse_topology_rejects(name):
    with pytest.raises(ValueError):
        aot.parse_topology(name)


def test_default_host_bounds():
    assert aot.default_chips_per_host_bounds("v5e", (2, 4)) == (2, 4, 1)  # v5litepod-8 is one VM
    assert aot.default_chips_per_host_bounds("v5e", (4, 4)) == (2, 2, 1)
    assert aot.default_chips_per_host_bounds("v4", (2, 2, 4)) == (2, 2, 1)
    assert aot.default_chips_per_host_bounds("v6e", (1, 1)) == (1, 1, 1)


def _mlp(x, w1, w2):
    return jnp.tanh(x @ w1) @ w2


def test_compile_report_on_cpu():
    m, k, h = 64, 32, 128
    args = (jax.ShapeDtypeStruct((m, k), jnp.float32), jax.ShapeDtypeStruct((k, h), jnp.float32),
            jax.ShapeDtypeStruct((h, k), jnp.float32))
    r = aot.compile_report(_mlp, args, peak_flops=1e12, hbm_bytes=1e6)
    assert r["n_devices"] == 1 and r["device_kind"] == jax.devices()[0].device_kind
    assert r["flops"] == 2 * m * k * h * 2  # two matmuls; tanh counts as a transcendental, not a flop
    assert r["argument_bytes"] == 4 * (m * k + k * h + h * k)
    assert r["output_bytes"] == 4 * m * k
    assert r["total_bytes"] >= r["argument_bytes"] + r["output_bytes"]
    assert r["fits_in_hbm"] is True
    assert r["compute_s"] == pytest.approx(r["flops"] / 1e12)
    assert r["step_s"] >= r["compute_s"] and 0 < r["mfu"] <= 1
    assert r["error"] is None and "GFLOP" in aot.format_report(r) and set(r) == set(aot.REPORT_KEYS)

    unknown = aot.compile_report(_mlp, args)  # a CPU has no table entry: no projection, but memory and flops
    assert unknown["peak_flops"] is None and unknown["step_s"] is None and unknown["fits_in_hbm"] is None
    assert unknown["flops"] == r["flops"]


def test_compile_report_counts_donated_buffers_once():
    x = jax.ShapeDtypeStruct((256, 256), jnp.float32)
    kept = aot.compile_report(lambda a: a * 2.0, (x,))
    donated = aot.compile_report(lambda a: a * 2.0, (x,), donate_argnums=0)
    assert kept["alias_bytes"] == 0 and donated["alias_bytes"] == 4 * 256 * 256
    assert donated["total_bytes"] == kept["total_bytes"] - 4 * 256 * 256
    with pytest.raises(ValueError, match="already jitted"):
        aot.compile_report(jax.jit(lambda a: a), (x,), donate_argnums=0)


@needs_libtpu
def test_compile_sharded_matmul_for_v5e_2x4():
    devices = aot.tpu_topology_devices("v5e:2x4")
    assert len(devices) == 8 and {d.device_kind for d in devices} == {"TPU v5 lite"}
    assert {d.process_index for d in devices} == {0}  # a v5litepod-8 is a single host

    mesh = jax.make_mesh((2, 4), ("data", "tensor"), devices=devices, axis_types=(AxisType.Auto,) * 2)
    m, k, n = 2048, 1024, 4096
    x = jax.ShapeDtypeStruct((m, k), jnp.bfloat16, sharding=NamedSharding(mesh, P("data", None)))
    w = jax.ShapeDtypeStruct((k, n), jnp.bfloat16, sharding=NamedSharding(mesh, P(None, "tensor")))
    r = aot.compile_report(lambda a, b: a @ b, (x, w))

    assert r["device_kind"] == "TPU v5 lite" and r["n_devices"] == 8
    assert r["flops"] == pytest.approx(2 * m * k * n / 8)  # per device: each computes one (m/2, n/4) block
    assert r["argument_bytes"] == 2 * (m * k // 2 + k * n // 4)
    assert r["output_bytes"] == 2 * (m // 2) * (n // 4)
    assert r["peak_flops"] == 197e12 and r["hbm_bytes"] == 16 * aot.GiB and r["fits_in_hbm"] is True
    assert r["compute_s"] == pytest.approx(r["flops"] / 197e12)
    assert r["step_s"] >= max(r["compute_s"], r["memory_s"]) and 0 < r["mfu"] <= 1


@needs_libtpu
def test_v5e_hbm_overflow_is_reported():
    devices = aot.tpu_topology_devices("v5litepod-8")
    mesh = jax.make_mesh((8,), ("data",), devices=devices, axis_types=(AxisType.Auto,))
    # 8 x 2^31 fp32 elements = 64 GiB, 8 GiB per chip, plus an 8 GiB output: 16 GiB is exceeded.
    big = jax.ShapeDtypeStruct((8 * 2**16, 2**15), jnp.float32, sharding=NamedSharding(mesh, P("data")))
    r = aot.compile_report(lambda a: a + 1.0, (big,))  # the TPU compiler itself refuses it
    assert r["fits_in_hbm"] is False and "HBM" in r["error"] and r["flops"] is None
    assert set(r) == set(aot.REPORT_KEYS)
    assert r["n_devices"] == 8 and r["hbm_bytes"] == 16 * aot.GiB
    assert "DOES NOT FIT" in aot.format_report(r)
    donated = aot.compile_report(lambda a: a + 1.0, (big,), donate_argnums=0)  # in place: 8 GiB per chip
    assert donated["error"] is None and donated["fits_in_hbm"] is True
    assert donated["total_bytes"] > 8 * aot.GiB


@needs_libtpu
@pytest.mark.parametrize("name,n_devices,n_hosts", [("v4-32", 16, 4), ("v5p:2x2x1", 4, 1), ("v6e:4x4", 16, 4)])
def test_topologies_have_one_device_per_chip(name, n_devices, n_hosts):
    devices = aot.tpu_topology_devices(name)
    assert len(devices) == n_devices
    assert len({d.process_index for d in devices}) == n_hosts
