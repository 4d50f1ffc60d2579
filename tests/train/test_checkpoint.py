"""Checkpointer: bit-identical round trips, retention, fallback past broken steps, SIGKILL mid-save, 8 devices to 1."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.train.checkpoint import CheckpointError, Checkpointer

LOGGER = "lmjax.train.checkpoint"
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


@flax.struct.dataclass
class State:
    step: jax.Array
    params: dict
    opt_state: optax.OptState
    key: jax.Array  # typed: jax.random.key
    raw_key: jax.Array  # uint32[2]: jax.random.PRNGKey


def make_state(seed: int = 0) -> State:
    """An AdamW state after two updates, so every moment is non-zero."""
    k = jax.random.key(seed)
    params = {"w": jax.random.normal(k, (8, 16)), "b": jnp.arange(16, dtype=jnp.float32)}
    tx = optax.adamw(1e-2)
    opt_state = tx.init(params)
    for _ in range(2):
        updates, opt_state = tx.update(jax.tree.map(jnp.ones_like, params), opt_state, params)
        params = optax.apply_updates(params, updates)
    return State(jnp.int32(2), params, opt_state, jax.random.key(seed + 1), jax.random.PRNGKey(seed + 2))


def abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def assert_bit_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def save_steps(ckpt, steps, metrics=None):
    for s in steps:
        ckpt.save(s, make_state(s), extra={"step": s}, metrics=(metrics or {}).get(s))
    ckpt.wait()


def test_round_trip_is_bit_identical_with_extra(tmp_path):
    state = make_state()
    extra = {"data": {"epoch": np.int64(3), "perm": np.arange(4)}, "config": {"lr": 0.1, "name": "gpt", "x": None},
             "tokenizer": "bpe"}
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(7, state, extra=extra)
        step, restored, got = ckpt.restore(abstract(state))
        _, from_arrays, _ = ckpt.restore(jax.tree.map(jnp.zeros_like, state))
    assert step == 7 and type(restored) is State
    assert_bit_identical(restored, state)
    assert_bit_identical(from_arrays, state)
    assert got == {"data": {"epoch": 3, "perm": [0, 1, 2, 3]}, "config": {"lr": 0.1, "name": "gpt", "x": None},
                   "tokenizer": "bpe"}


def test_extra_that_is_not_json_fails_at_save(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(TypeError, match="JSON types: object is not JSON-serializable"):
            ckpt.save(1, make_state(), extra={"f": object()})
        assert ckpt.all_steps() == []


def test_keeps_last_k_plus_best(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    save_steps(ckpt, [1, 2, 3, 4, 5], {1: {"eval_loss": 3.0}, 2: {"eval_loss": 1.0}, 3: {"eval_loss": 2.0}})
    assert ckpt.all_steps() == [2, 4, 5]  # 4 and 5 carry no metrics but are the latest
    assert ckpt.best_step() == 2
    ckpt.close()
    ckpt = Checkpointer(tmp_path, keep=2)  # metrics are read back from disk
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 5
    save_steps(ckpt, [6], {6: {"eval_loss": 0.5}})
    assert ckpt.all_steps() == [5, 6] and ckpt.best_step() == 6
    assert ckpt.restore(abstract(make_state()), step=6)[2] == {"step": 6}
    ckpt.close()


def test_best_mode_max_and_no_best(tmp_path):
    with Checkpointer(tmp_path / "max", keep=1, best_metric="acc", best_mode="max") as ckpt:
        save_steps(ckpt, [1, 2, 3], {1: {"acc": 0.2}, 2: {"acc": 0.9}, 3: {"acc": float("nan")}})
        assert ckpt.all_steps() == [2, 3] and ckpt.best_step() == 2
    with Checkpointer(tmp_path / "none", keep=2, best_metric=None) as ckpt:
        save_steps(ckpt, [1, 2, 3], {1: {"eval_loss": 0.1}})
        assert ckpt.all_steps() == [2, 3] and ckpt.best_step() is None


def test_bad_arguments_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match="keep=0"):
        Checkpointer(tmp_path, keep=0)
    with pytest.raises(ValueError, match="'min' or 'max'"):
        Checkpointer(tmp_path, best_mode="lowest")


def corrupt_truncate_arrays(step_dir):
    for f in (step_dir / "state").rglob("d/*"):
        if f.is_file():
            f.write_bytes(f.read_bytes()[:10])


def corrupt_delete_extra(step_dir):
    (step_dir / "extra" / "metadata").unlink()


# When Orbax's restore fails, tensorstore reads still in flight call back into its closed event loop (harmless).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("corrupt", [corrupt_truncate_arrays, corrupt_delete_extra])
def test_broken_latest_falls_back_with_one_warning(tmp_path, caplog, corrupt):
    ckpt = Checkpointer(tmp_path, keep=3)
    save_steps(ckpt, [1, 2, 3])
    corrupt(tmp_path / "3")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        step, state, extra = ckpt.restore(abstract(make_state()))
    assert (step, extra) == (2, {"step": 2})
    assert_bit_identical(state, make_state(2))
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1 and "step 3" in warnings[0] and "falling back to step 2" in warnings[0]
    assert "\n" not in warnings[0]
    assert (tmp_path / "3").is_dir()  # kept for inspection, not deleted silently
    with pytest.raises(CheckpointError, match="step 3 .* unreadable"):
        ckpt.restore(abstract(make_state()), step=3)
    save_steps(ckpt, [3])  # resumed training reaches step 3 again and replaces the broken one
    assert ckpt.restore(abstract(make_state()))[0] == 3
    ckpt.close()


def test_truncated_orbax_metadata_is_set_aside(tmp_path, caplog):
    # Orbax cannot even open a directory holding a step with an empty _CHECKPOINT_METADATA.
    ckpt = Checkpointer(tmp_path, keep=3)
    save_steps(ckpt, [1, 2])
    ckpt.close()
    (tmp_path / "2" / "_CHECKPOINT_METADATA").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        ckpt = Checkpointer(tmp_path, keep=3)
    assert ckpt.latest_step() == 1
    step, state, _ = ckpt.restore(abstract(make_state()))
    assert step == 1
    assert_bit_identical(state, make_state(1))
    assert (tmp_path / "2.unreadable").is_dir()
    assert any("step 2" in r.getMessage() and "falling back" in r.getMessage() for r in caplog.records)
    ckpt.close()


def test_uncommitted_temp_dir_is_ignored(tmp_path, caplog):
    with Checkpointer(tmp_path) as ckpt:
        save_steps(ckpt, [5])
    (tmp_path / "7.orbax-checkpoint-tmp" / "state").mkdir(parents=True)  # what a kill mid-save leaves
    (tmp_path / "7.orbax-checkpoint-tmp" / "state" / "manifest.ocdbt").write_bytes(b"partial")
    with Checkpointer(tmp_path) as ckpt, caplog.at_level(logging.WARNING, logger=LOGGER):
        assert ckpt.all_steps() == [5]
        assert ckpt.restore(abstract(make_state()))[2] == {"step": 5}
        save_steps(ckpt, [7])  # saving that step again replaces the temp dir
        assert ckpt.restore(abstract(make_state()))[2] == {"step": 7}
    assert not [r for r in caplog.records if r.name == LOGGER]
    assert sorted(p.name for p in tmp_path.iterdir() if "tmp" in p.name) == []


def test_nothing_readable_raises_naming_directory(tmp_path):
    with Checkpointer(tmp_path / "empty") as ckpt, pytest.raises(CheckpointError, match="no checkpoint in .*empty"):
        ckpt.restore(abstract(make_state()))
    ckpt = Checkpointer(tmp_path / "broken")
    save_steps(ckpt, [1, 2])
    for s in (1, 2):
        corrupt_delete_extra(tmp_path / "broken" / str(s))
    with pytest.raises(CheckpointError, match="no checkpoint in .*broken is readable.*fresh directory"):
        ckpt.restore(abstract(make_state()))
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 5 .*\[1, 2\]"):
        ckpt.restore(abstract(make_state()), step=5)
    ckpt.close()


def test_model_mismatch_is_not_mistaken_for_corruption(tmp_path, caplog):
    with Checkpointer(tmp_path) as ckpt:
        save_steps(ckpt, [1, 2])
        target = abstract(make_state())
        target = target.replace(params={**target.params, "w": jax.ShapeDtypeStruct((8, 32), jnp.float32)})
        with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(CheckpointError) as err:
            ckpt.restore(target)
    assert "step 2" in str(err.value) and "params/w saved (8, 16) but wanted (8, 32)" in str(err.value)
    assert "config that saved it" in str(err.value)
    assert not [r for r in caplog.records if r.name == LOGGER]


def test_saving_an_earlier_step_needs_force(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        save_steps(ckpt, [4, 5])
        with pytest.raises(CheckpointError, match="step 5 is not after the latest checkpoint 5.*force=True"):
            ckpt.save(5, make_state(), extra={})
        ckpt.save(3, make_state(3), extra={"step": 3}, force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [3]
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["3"]


KILL_CHILD = """
import sys, numpy as np, jax.numpy as jnp
from lmjax.train.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1], keep=1, best_metric=None)
step = 0
while True:
    step += 1
    state = {"w": jnp.asarray(np.random.default_rng(step).standard_normal((1024, 2048), np.float32)), "n": jnp.int32(step)}
    ckpt.save(step, state, extra={"step": step})
    print(step - 1, flush=True)  # save(step) starts only once step - 1 has committed
"""


def test_sigkill_during_async_save_keeps_last_committed(tmp_path):
    delay = random.uniform(0.0, 0.6)
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=ENV)
    committed = -1
    while committed < 2:  # at least two steps on disk, so old-step deletion is part of what gets interrupted
        line = proc.stdout.readline()
        assert line, f"child died: rc={proc.wait()}"
        committed = int(line)
    time.sleep(delay)
    os.kill(proc.pid, signal.SIGKILL)
    committed = max([committed] + [int(x) for x in proc.stdout.read().split()])
    proc.wait()
    target = {"w": jax.ShapeDtypeStruct((1024, 2048), jnp.float32), "n": jax.ShapeDtypeStruct((), jnp.int32)}
    with Checkpointer(tmp_path, keep=1, best_metric=None) as ckpt:
        step, state, extra = ckpt.restore(target)
    assert step >= committed, f"delay={delay:.3f}: lost step {committed}, restored {step}"
    assert extra == {"step": step} and int(state["n"]) == step
    expected = np.random.default_rng(step).standard_normal((1024, 2048), np.float32)
    assert np.asarray(state["w"]).tobytes() == expected.tobytes()


TOPOLOGY_CHILD = """
import sys, numpy as np, jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from lmjax.train.checkpoint import Checkpointer
assert jax.device_count() == 8, jax.devices()
mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
put = lambda x, *spec: jax.device_put(x, NamedSharding(mesh, P(*spec)))
state = {"w": put(np.arange(64 * 32, dtype=np.float32).reshape(64, 32), "data", "model"),
         "b": put(np.arange(32, dtype=np.float32), "model"), "step": put(np.int32(9)), "key": jax.random.key(5)}
assert state["w"].addressable_shards[0].data.shape == (16, 16)
with Checkpointer(sys.argv[1]) as ckpt:
    ckpt.save(9, state, extra={"devices": jax.device_count()})
"""


def test_restore_8_device_checkpoint_onto_1_device(tmp_path):
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    proc = subprocess.run([sys.executable, "-c", TOPOLOGY_CHILD, str(tmp_path)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"w": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=one),
              "b": jax.ShapeDtypeStruct((32,), jnp.float32, sharding=one),
              "step": jax.ShapeDtypeStruct((), jnp.int32, sharding=one),
              "key": jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=one)}
    with Checkpointer(tmp_path) as ckpt:
        step, state, extra = ckpt.restore(target)
    assert (step, extra) == (9, {"devices": 8})
    assert state["w"].sharding == one
    np.testing.assert_array_equal(state["w"], np.arange(64 * 32, dtype=np.float32).reshape(64, 32))
    np.testing.assert_array_equal(state["b"], np.arange(32, dtype=np.float32))
    assert int(state["step"]) == 9
    np.testing.assert_array_equal(jax.random.key_data(state["key"]), jax.random.key_data(jax.random.key(5)))
