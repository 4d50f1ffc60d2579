"""Peak FLOP/s, MFU, the persistent compilation cache and the CPU fast-path environment."""

import json
import math
import os
import subprocess
import sys
import textwrap

import jax
import pytest

from lmjax.train import peak

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(code: str, env: dict[str, str]) -> str:
    """Run `code` in a fresh CPU-only Python (JAX settings bind at backend start-up) and return its stdout."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, **env}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


# ------------------------------------------------------------------------------------------------------------ mfu


def test_mfu_math():
    # 6 MFLOP/token at 1000 tokens/s = 6 GFLOP/s, against 10 GFLOP/s per device.
    assert peak.mfu(6e6, 1000, 1e10) == pytest.approx(0.6)
    assert peak.mfu(6e6, 1000, 1e10, n_devices=4) == pytest.approx(0.15)
    assert peak.mfu(0.0, 1000, 1e10) == 0.0
    assert peak.mfu(6e6, 1e6, 1e10) == 1.0  # clipped
    with pytest.raises(ValueError):
        peak.mfu(6e6, 1000, 0.0)
    with pytest.raises(ValueError):
        peak.mfu(-1.0, 1000, 1e10)


@pytest.mark.parametrize("kind,dtype,tflops", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.4),
    ("NVIDIA H100 80GB HBM3", "float32", 494.7),  # TF32
    ("NVIDIA H100 PCIe", "bfloat16", 756.0),
    ("NVIDIA H200", "bfloat16", 989.4),
    ("NVIDIA A100-SXM4-40GB", "bfloat16", 312.0),
    ("Tesla V100-SXM2-16GB", "float32", 15.7),
    ("NVIDIA L4", "bfloat16", 121.0),
    ("TPU v4", "bfloat16", 275.0),
    ("TPU v5 lite", "bfloat16", 197.0),
    ("TPU v5", "bfloat16", 459.0),
    ("TPU v6 lite", "bfloat16", 918.0),
])
def test_vendor_peaks(kind, dtype, tflops):
    assert peak.vendor_peak_flops(kind, dtype) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("kind", ["cpu", "NVIDIA L40S", "TPU v7x", "NVIDIA GeForce RTX 4090"])
def test_unknown_kinds_have_no_vendor_peak(kind):
    assert peak.vendor_peak_flops(kind, "bfloat16") is None


# ---------------------------------------------------------------------------------------------- measured peak


def test_hardware_summary_names_cores_platform_and_version(monkeypatch):
    monkeypatch.setattr(peak, "_cpu_model", lambda: "Test CPU")
    monkeypatch.setattr(peak, "_n_cores", lambda: 1)
    line = peak.hardware_summary()
    assert line.startswith(f"Test CPU, 1 of {os.cpu_count()} cores")
    assert f"jax {jax.__version__} on {jax.devices()[0].platform}" in line
    assert "load average" in line
    if jax.devices()[0].platform == "cpu":  # accelerators only: "N x <device kind>"
        assert " x " not in line


def test_measure_matmul_peak_runs_both_paths():
    # One dot per call, then (a tiny n under a long minimum call time) the chained fori_loop path.
    assert 0 < peak.measure_matmul_peak(n=128, repeats=2, min_call_s=0.0) < math.inf
    assert 0 < peak.measure_matmul_peak("bfloat16", n=64, repeats=2, min_call_s=0.01, statistic="best") < math.inf
    with pytest.raises(ValueError):
        peak.measure_matmul_peak(n=64, statistic="mean")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv(peak.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(peak.PEAK_ENV, raising=False)
    monkeypatch.setattr(peak, "_MEASURED", {})
    return tmp_path


def _new_process():
    peak._MEASURED.clear()  # what a fresh process starts with: only the file cache


def test_peak_is_measured_once_then_read_from_the_cache(cache_home, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet machine
    calls = []

    def fake_measure(dtype="float32", n=2048, repeats=7, device=None, min_call_s=0.02, statistic="median"):
        calls.append(jax.numpy.dtype(dtype).name)
        return 100.0 + len(calls)

    monkeypatch.setattr(peak, "measure_matmul_peak", fake_measure)
    assert peak.device_peak_flops("float32") == 101e9
    assert peak.device_peak_flops("float32") == 101e9  # same process
    _new_process()
    assert peak.device_peak_flops("float32") == 101e9  # from the file: not measured again
    assert calls == ["float32"]

    path = cache_home / "matmul_peak.json"
    assert peak.peak_cache_path() == str(path)
    (key, entry), = json.loads(path.read_text()).items()
    assert entry["gflops"] == 101.0 and "measured" in entry
    assert key.startswith("cpu|") and "|float32|" in key and f"jax {jax.__version__}" in key
    assert f"x{peak._n_cores()}" in key

    assert peak.device_peak_flops("bfloat16") == 102e9  # another dtype is another entry
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # the same host peak
    assert peak.device_peak_flops("float32") == 101e9
    monkeypatch.setenv("XLA_FLAGS", peak.YNN_FLAG)  # other XLA flags make another entry
    assert peak.device_peak_flops("float32") == 103e9
    assert calls == ["float32", "bfloat16", "float32"]
    assert len(json.loads(path.read_text())) == 3


def test_peak_measured_on_a_busy_machine_is_remeasured(cache_home, monkeypatch):
    results = iter([80.0, 60.0, 120.0])
    monkeypatch.setattr(peak, "measure_matmul_peak", lambda *a, **k: next(results))
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * peak._n_cores() + 1, 0.0, 0.0))
    assert peak.device_peak_flops() == 80e9
    assert peak.device_peak_flops() == 80e9  # at most one measurement per process
    _new_process()
    assert peak.device_peak_flops() == 80e9  # busy again and slower: the best so far stands
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    _new_process()
    assert peak.device_peak_flops() == 120e9  # measured on a quiet machine: kept for good
    _new_process()
    assert peak.device_peak_flops() == 120e9
    (entry,) = json.loads((cache_home / "matmul_peak.json").read_text()).values()
    assert entry["gflops"] == 120.0 and entry["busy"] is False


def test_simulated_cpu_devices_share_the_host_peak(cache_home, monkeypatch):
    monkeypatch.setattr(peak, "measure_matmul_peak", lambda *a, **k: 400.0)
    assert peak.device_peak_flops() == 400e9
    # As under --xla_force_host_platform_device_count=4: four devices on the same cores, a quarter each.
    cpu = jax.devices("cpu")[0]
    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [cpu] * 4)
    assert peak.device_peak_flops() == 100e9


def test_env_override_skips_measurement(cache_home, monkeypatch):
    monkeypatch.setattr(peak, "measure_matmul_peak", lambda *a, **k: pytest.fail("measured despite override"))
    monkeypatch.setenv(peak.PEAK_ENV, "123.5")
    assert peak.device_peak_flops("float32") == 123.5e9
    assert not (cache_home / "matmul_peak.json").exists()


def test_corrupt_cache_file_is_remeasured(cache_home, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    (cache_home / "matmul_peak.json").write_text("{not json")
    monkeypatch.setattr(peak, "measure_matmul_peak", lambda *a, **k: 50.0)
    assert peak.device_peak_flops() == 50e9
    (entry,) = json.loads((cache_home / "matmul_peak.json").read_text()).values()
    assert entry["gflops"] == 50.0


# ---------------------------------------------------------------------------------------- compilation cache

_CACHE_PROBE = """
    import jax, jax.numpy as jnp
    from lmjax.train import peak
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None)
    print(peak.enable_compilation_cache())
    print(float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8)))))
    print(len(hits))
"""


def test_compilation_cache_is_reused_by_the_next_process(tmp_path):
    cache = tmp_path / "jax_cache"
    path, value, hits = _run(_CACHE_PROBE, {peak.JAX_CACHE_ENV: str(cache)}).split()
    assert path == str(cache) and int(hits) == 0
    entries = sorted(os.listdir(cache))
    assert entries, "the first process wrote nothing to the cache"
    path2, value2, hits2 = _run(_CACHE_PROBE, {peak.JAX_CACHE_ENV: str(cache)}).split()
    assert int(hits2) >= 1 and value2 == value
    assert sorted(os.listdir(cache)) == entries  # a hit writes nothing new


@pytest.fixture
def restore_jax_cache_config():
    """enable_compilation_cache changes process-wide JAX settings: put them back after the test."""
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_enable_compilation_cache", "jax_compilation_cache_dir",
             "jax_persistent_cache_min_compile_time_secs", "jax_persistent_cache_min_entry_size_bytes")
    saved = {n: getattr(jax.config, n) for n in names}
    yield
    for n, v in saved.items():
        jax.config.update(n, v)
    compilation_cache.reset_cache()


def test_compilation_cache_can_be_turned_off(tmp_path, monkeypatch, restore_jax_cache_config):
    monkeypatch.setenv(peak.CACHE_DIR_ENV, str(tmp_path))
    for off in ("0", "off", "OFF", "false"):
        monkeypatch.setenv(peak.JAX_CACHE_ENV, off)
        assert peak.enable_compilation_cache() is None
        assert jax.config.jax_enable_compilation_cache is False
    jax.jit(lambda x: x * 3.0 + 1.0)(jax.numpy.ones(3)).block_until_ready()
    assert not (tmp_path / "jax_cache").exists()


def test_compilation_cache_default_dir_and_explicit_path(tmp_path, monkeypatch, restore_jax_cache_config):
    monkeypatch.setenv(peak.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(peak.JAX_CACHE_ENV, raising=False)
    assert peak.enable_compilation_cache() == str(tmp_path / "jax_cache")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    jax.jit(lambda x: x * 5.0 - 2.0)(jax.numpy.ones(5)).block_until_ready()
    assert os.listdir(tmp_path / "jax_cache"), "a tiny CPU program was not cached"
    # Switching directories in a process that already compiled rebinds the cache.
    other = tmp_path / "other"
    assert peak.enable_compilation_cache(str(other)) == str(other)
    jax.jit(lambda x: x * 7.0 - 4.0)(jax.numpy.ones(7)).block_until_ready()
    assert os.listdir(other)


# ---------------------------------------------------------------------------------------------- CPU fast path


def test_cpu_fast_path_env(monkeypatch):
    monkeypatch.setattr(peak, "find_tcmalloc", lambda: "/opt/libtcmalloc_minimal.so.4")
    assert peak.cpu_fast_path({}) == {"XLA_FLAGS": peak.YNN_FLAG, "LD_PRELOAD": "/opt/libtcmalloc_minimal.so.4"}
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "LD_PRELOAD": "/x/libfoo.so"}
    changes = peak.cpu_fast_path(env)
    assert changes["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {peak.YNN_FLAG}"
    assert changes["LD_PRELOAD"] == "/opt/libtcmalloc_minimal.so.4 /x/libfoo.so"
    assert peak.cpu_fast_path({**env, **changes}) == {}  # idempotent
    assert peak.cpu_fast_path({}, ynn=False, tcmalloc=False) == {}


def test_cpu_fast_path_without_tcmalloc(monkeypatch):
    monkeypatch.setattr(peak, "find_tcmalloc", lambda: None)
    assert peak.cpu_fast_path({}) == {"XLA_FLAGS": peak.YNN_FLAG}


def test_find_tcmalloc_returns_a_real_file():
    lib = peak.find_tcmalloc()
    assert lib is None or (os.path.isfile(lib) and "tcmalloc" in os.path.basename(lib))


_TRAIN_PROBE = """
    import jax, jax.numpy as jnp, numpy as np
    rng = np.random.default_rng(0)  # NumPy inputs: every eager jax op would be one more compile to wait for
    params = {"w1": 0.1 * rng.standard_normal((256, 64), np.float32),
              "w2": 0.1 * rng.standard_normal((64, 256), np.float32)}
    x = rng.standard_normal((32, 64), np.float32)

    def loss(p):  # weights stored (out, in) and used as x @ W.T, the layout the YNN flag speeds up
        h = jax.nn.gelu(x @ p["w1"].T)
        return jnp.mean((h @ p["w2"].T - x) ** 2) + jnp.mean(jax.nn.logsumexp(h, axis=-1))

    @jax.jit
    def train(p):  # 5 steps of SGD with momentum in one program; the optimizer itself is not under test
        def step(carry, _):
            p, m = carry
            l, g = jax.value_and_grad(loss)(p)
            m = jax.tree.map(lambda m, g: 0.9 * m + g, m, g)
            return (jax.tree.map(lambda p, m: p - 0.05 * m, p, m), m), l
        return jax.lax.scan(step, (p, jax.tree.map(jnp.zeros_like, p)), length=5)[1]

    print(*np.asarray(train(params)).tolist())
"""


def test_fast_path_keeps_the_losses():
    # The YNN flag is experimental: a train step must give the same losses with and without it (and tcmalloc).
    plain = [float(v) for v in _run(_TRAIN_PROBE, {"XLA_FLAGS": "", "LD_PRELOAD": ""}).split()]
    fast = [float(v) for v in _run(_TRAIN_PROBE, peak.cpu_fast_path({})).split()]
    assert len(plain) == 5 and plain[-1] < plain[0]
    assert fast == pytest.approx(plain, rel=1e-5)
