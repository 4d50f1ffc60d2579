"""The runtime set-up: cache directory, JAX's persistent compilation cache and the CPU fast-path environment."""

import os
import subprocess
import sys
import textwrap

import jax
import pytest

from lmjax import runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, env: dict[str, str]) -> str:
    """Run `code` in a fresh CPU-only Python (JAX settings bind at backend start-up) and return its stdout."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT, **env}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv(runtime.CACHE_DIR_ENV, str(tmp_path / "c"))
    assert runtime.cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv(runtime.CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_dir() == str(tmp_path / "xdg" / "lmjax")


def test_write_json_atomic(tmp_path):
    path = tmp_path / "new" / "r.json"
    runtime.write_json_atomic(path, {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert path.read_text() == '{"a": [1, 2], "b": 1}\n'
    runtime.write_json_atomic(path, {"c": 3})  # replaces the file
    assert path.read_text() == '{"c": 3}\n'
    with pytest.raises(TypeError):
        runtime.write_json_atomic(path, {"d": object()})  # fails half-way: the old file stands, no temporary left
    assert path.read_text() == '{"c": 3}\n' and os.listdir(path.parent) == ["r.json"]


# ---------------------------------------------------------------------------------------- compilation cache

_CACHE_PROBE = """
    import jax, jax.numpy as jnp
    from lmjax import runtime
    hits = []
    jax.monitoring.register_event_listener(
        lambda event, **kw: hits.append(1) if event == "/jax/compilation_cache/cache_hits" else None)
    print(runtime.enable_compilation_cache())
    print(float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((8, 8)))))
    print(len(hits))
"""


def test_compilation_cache_is_reused_by_the_next_process(tmp_path):
    cache = tmp_path / "jax_cache"
    path, value, hits = _run(_CACHE_PROBE, {runtime.JAX_CACHE_ENV: str(cache)}).split()
    assert path == str(cache) and int(hits) == 0
    entries = sorted(os.listdir(cache))
    assert entries, "the first process wrote nothing to the cache"
    path2, value2, hits2 = _run(_CACHE_PROBE, {runtime.JAX_CACHE_ENV: str(cache)}).split()
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
    monkeypatch.setenv(runtime.CACHE_DIR_ENV, str(tmp_path))
    for off in ("0", "off", "OFF", "false"):
        monkeypatch.setenv(runtime.JAX_CACHE_ENV, off)
        assert runtime.enable_compilation_cache() is None
        assert jax.config.jax_enable_compilation_cache is False
    jax.jit(lambda x: x * 3.0 + 1.0)(jax.numpy.ones(3)).block_until_ready()
    assert not (tmp_path / "jax_cache").exists()


def test_compilation_cache_default_dir_and_explicit_path(tmp_path, monkeypatch, restore_jax_cache_config):
    monkeypatch.setenv(runtime.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(runtime.JAX_CACHE_ENV, raising=False)
    assert runtime.enable_compilation_cache() == str(tmp_path / "jax_cache")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    jax.jit(lambda x: x * 5.0 - 2.0)(jax.numpy.ones(5)).block_until_ready()
    assert os.listdir(tmp_path / "jax_cache"), "a tiny CPU program was not cached"
    # Switching directories in a process that already compiled rebinds the cache.
    other = tmp_path / "other"
    assert runtime.enable_compilation_cache(str(other)) == str(other)
    jax.jit(lambda x: x * 7.0 - 4.0)(jax.numpy.ones(7)).block_until_ready()
    assert os.listdir(other)


# ---------------------------------------------------------------------------------------------- CPU fast path


def test_cpu_fast_path_env(monkeypatch):
    monkeypatch.setattr(runtime, "find_tcmalloc", lambda: "/opt/libtcmalloc_minimal.so.4")
    assert runtime.cpu_fast_path({}) == {"XLA_FLAGS": runtime.YNN_FLAG, "LD_PRELOAD": "/opt/libtcmalloc_minimal.so.4"}
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8", "LD_PRELOAD": "/x/libfoo.so"}
    changes = runtime.cpu_fast_path(env)
    assert changes["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=8 {runtime.YNN_FLAG}"
    assert changes["LD_PRELOAD"] == "/opt/libtcmalloc_minimal.so.4 /x/libfoo.so"
    assert runtime.cpu_fast_path({**env, **changes}) == {}  # idempotent
    assert runtime.cpu_fast_path({}, ynn=False, tcmalloc=False) == {}


def test_cpu_fast_path_without_tcmalloc(monkeypatch):
    monkeypatch.setattr(runtime, "find_tcmalloc", lambda: None)
    assert runtime.cpu_fast_path({}) == {"XLA_FLAGS": runtime.YNN_FLAG}


def test_find_tcmalloc_returns_a_real_file():
    lib = runtime.find_tcmalloc()
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
    fast = [float(v) for v in _run(_TRAIN_PROBE, runtime.cpu_fast_path({})).split()]
    assert len(plain) == 5 and plain[-1] < plain[0]
    assert fast == pytest.approx(plain, rel=1e-5)
