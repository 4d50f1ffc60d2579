"""Fault injection: every file of a checkpoint broken in turn, a kill during an asynchronous save, a full disk, a
read-only run directory, two runs on one directory, signals. Each fault ends in one line and exit status 2 (or 130 /
143 for a signal), or in a fallback to the previous checkpoint, which is intact."""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.train.checkpoint import Checkpointer, storage_error
from lmjax.train.lock import LockError, WorkdirLock

LOGGER = "lmjax.train.checkpoint"
QUICK = ["--set", "train.eval_every=10", "--set", "train.checkpoint_every=10", "--set", "train.sample_tokens=0",
         "--set", "train.progress=false", "--set", "train.plot=false", "--set", "train.tensorboard=false"]


def _lmjax(*args, env=None, **kwargs):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}
    return subprocess.run([sys.executable, "-m", "lmjax", *args], capture_output=True, text=True, env=env,
                          timeout=300, **kwargs)


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def _one_line(proc, status: int = 2, prefix: str = "error: ") -> str:
    """The process ended with `status` and wrote exactly one line to stderr, starting with `prefix`."""
    lines = _lines(proc.stderr)
    assert proc.returncode == status, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(prefix), proc.stderr[-3000:]
    return lines[0]


def _steps(checkpoints: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> pathlib.Path:
    """A 20-step gpt_smoke run with checkpoints at steps 10 and 20 (copy it before breaking it)."""
    work = tmp_path_factory.mktemp("faults") / "run"
    proc = _lmjax("train", "gpt_smoke", "--set", f"train.workdir={work}", *QUICK)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _steps(work / "checkpoints") == [10, 20]
    return work


def _copy(run: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    work = tmp_path / "run"
    shutil.copytree(run, work)
    return work


# ------------------------------------------------------------------------------------ every file of a step, broken


def _state(seed: int) -> dict:
    """A small train-state-like tree: parameters, Adam moments, a step and a typed PRNG key."""
    k = jax.random.key(seed)
    params = {"w": jax.random.normal(k, (16, 32)), "b": jnp.arange(32, dtype=jnp.float32) + seed}
    return {"step": jnp.int32(seed), "params": params, "opt": optax.adam(1e-3).init(params), "rng": jax.random.key(7)}


def _bits(tree) -> list[bytes]:
    unkey = lambda x: jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x  # noqa: E731
    return [np.asarray(unkey(x)).tobytes() for x in jax.tree.leaves(tree)]


def _break(path: pathlib.Path, how: str, rng: random.Random) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "zero":
        path.write_bytes(bytes(len(data)))
    elif how == "delete":
        path.unlink()
    elif how == "garbage":
        path.write_bytes(rng.randbytes(max(len(data), 16)))


def test_each_file_of_a_step_broken_each_way_falls_back_or_restores_intact(tmp_path, caplog):
    """For every file Orbax writes in a step and each of truncate, zero, delete and garbage: the restore either
    gives the newest step bit for bit (the file was not needed) or falls back to the previous step, bit for bit, with
    one warning line naming the broken step, what was wrong and the step used. It never raises."""
    pristine = tmp_path / "pristine"
    states = {1: _state(1), 2: _state(2)}
    with Checkpointer(pristine, keep=3) as ckpt:
        for s, state in states.items():
            ckpt.save(s, state, extra={"step": s}, metrics={"eval_loss": 3.0 - s})
    files = sorted(p.relative_to(pristine / "2") for p in (pristine / "2").rglob("*") if p.is_file())
    assert {"_CHECKPOINT_METADATA", "extra/metadata", "metrics/metrics", "state/_METADATA",
            "state/manifest.ocdbt"} <= {f.as_posix() for f in files}
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), states[1])
    rng = random.Random(0)
    fell_back = set()
    for rel in files:
        for how in ("truncate", "zero", "delete", "garbage"):
            case = tmp_path / "case"
            shutil.rmtree(case, ignore_errors=True)
            shutil.copytree(pristine, case)
            _break(case / "2" / rel, how, rng)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger=LOGGER), Checkpointer(case, keep=3) as ckpt:
                step, state, extra = ckpt.restore(target)
            what = f"{how} {rel}"
            assert step in (1, 2) and extra == {"step": step}, what
            assert _bits(state) == _bits(states[step]), what
            warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and "unreadable" in r.getMessage()
                        and "metrics of" not in r.getMessage()]
            if step == 2:
                assert not warnings, (what, warnings)
                continue
            fell_back.add(rel.as_posix())
            assert len(warnings) == 1 and "\n" not in warnings[0], (what, warnings)
            assert warnings[0].startswith(f"checkpoint step 2 in {case} is unreadable (")
            assert warnings[0].endswith("falling back to step 1"), (what, warnings)
            assert "bound method" not in warnings[0] and "tensorstore_spec" not in warnings[0], warnings[0]
            named = warnings[0].split("(", 1)[1].split(":", 1)[0].rstrip("/")
            assert (pristine / "2" / named).exists(), (what, named)  # a file (or directory) of the step
            assert (case / "2").is_dir() or (case / "2.unreadable").is_dir()  # kept for inspection
    # The files a restore needs are detected whichever way they break.
    assert {"state/manifest.ocdbt", "state/_METADATA", "extra/metadata", "_CHECKPOINT_METADATA"} <= fell_back


def test_kill_during_async_save_then_a_writer_cleans_up_and_goes_on(tmp_path):
    """SIGKILL at a random moment of a stream of asynchronous saves: the last committed step restores intact, and
    the next writer removes the uncommitted temporary directory and saves over it."""
    child = """
import sys, numpy as np, jax.numpy as jnp
from lmjax.train.checkpoint import Checkpointer
ckpt = Checkpointer(sys.argv[1], keep=2, best_metric=None)
for step in range(1, 10_000):
    ckpt.save(step, {"w": jnp.full((512, 1024), float(step)), "n": jnp.int32(step)}, extra={"step": step})
    print(step - 1, flush=True)  # save(step) starts only once step - 1 has committed
"""
    proc = subprocess.Popen([sys.executable, "-c", child, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    committed = -1
    while committed < 2:
        line = proc.stdout.readline()
        assert line, f"child died: rc={proc.wait()}"
        committed = int(line)
    time.sleep(random.uniform(0.0, 0.3))
    proc.kill()
    committed = max([committed] + [int(x) for x in proc.stdout.read().split()])
    proc.wait()
    target = {"w": jax.ShapeDtypeStruct((512, 1024), jnp.float32), "n": jax.ShapeDtypeStruct((), jnp.int32)}
    with Checkpointer(tmp_path, keep=2, best_metric=None, cleanup_tmp=True) as ckpt:
        assert not [p for p in tmp_path.iterdir() if "tmp" in p.name]
        step, state, extra = ckpt.restore(target)
        assert step >= committed and extra == {"step": step} and int(state["n"]) == step
        np.testing.assert_array_equal(state["w"], np.full((512, 1024), float(step), np.float32))
        ckpt.save(step + 1, {"w": jnp.zeros((512, 1024)), "n": jnp.int32(step + 1)}, extra={"step": step + 1})
    assert _steps(tmp_path)[-1] == step + 1


# ------------------------------------------------------------------------------------------ through the command


def test_eval_falls_back_with_one_warning_and_fails_with_one_line_when_nothing_is_left(run, tmp_path):
    work = _copy(run, tmp_path)
    (work / "checkpoints" / "20" / "state" / "manifest.ocdbt").write_bytes(b"\0" * 64)
    ev = _lmjax("eval", "gpt_smoke", "--set", f"train.workdir={work}")
    warning = _one_line(ev, 0, "warning: ")
    assert warning.startswith(f"warning: checkpoint step 20 in {work / 'checkpoints'} is unreadable "
                              "(state/manifest.ocdbt: ")
    assert warning.endswith("falling back to step 10")
    assert json.loads(ev.stdout.strip().splitlines()[-1])["step"] == 10

    (work / "checkpoints" / "10" / "extra" / "metadata").write_bytes(b"{")
    ev = _lmjax("eval", "gpt_smoke", "--set", f"train.workdir={work}")
    err = _one_line(ev)
    assert "no checkpoint in" in err and "is readable" in err and "step 10: extra/metadata" in err


def test_resuming_with_another_shape_is_one_line(run, tmp_path):
    work = _copy(run, tmp_path)
    proc = _lmjax("train", "gpt_smoke", "--set", f"train.workdir={work}", "--set", "model.n_embd=64",
                  "--set", "train.steps=30", *QUICK)
    err = _one_line(proc)
    assert "checkpoint step 20" in err and "does not fit the model" in err and "but wanted" in err
    assert _steps(work / "checkpoints") == [10, 20]


def test_a_second_run_on_a_held_workdir_fails_at_once_naming_the_holder(tmp_path):
    held = WorkdirLock(tmp_path / "run").acquire()
    try:
        proc = _lmjax("train", "gpt_smoke", "--set", f"train.workdir={tmp_path / 'run'}", *QUICK)
    finally:
        held.release()
    err = _one_line(proc)
    assert f"{tmp_path / 'run'} is in use by process {os.getpid()} on " in err and "train.workdir" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_lock_is_exclusive_and_a_dead_holders_lock_is_taken_over(tmp_path):
    first = WorkdirLock(tmp_path).acquire()
    with pytest.raises(LockError, match=rf"in use by process {os.getpid()} on .* \(started "):
        WorkdirLock(tmp_path).acquire()
    first.release()
    with WorkdirLock(tmp_path):  # released: free again
        pass
    (tmp_path / ".lock").write_text('{"pid": 999999, "host": "gone", "started": "yesterday"}\n')  # a leftover file
    with WorkdirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lmjax.train.lock import WorkdirLock; "
                               "WorkdirLock(sys.argv[1]).acquire(); print(flush=True); time.sleep(60)", str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "\n"
    with pytest.raises(LockError, match=f"process {holder.pid} "):
        WorkdirLock(tmp_path).acquire()
    holder.kill()  # SIGKILL: the kernel releases the flock
    holder.wait()
    with WorkdirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()


def _make_read_only(path: pathlib.Path) -> None:
    """Root ignores permission bits: an immutable directory (chattr +i) refuses writes even to root."""
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
        pytest.skip("root cannot make a directory read-only here (no chattr +i)")


def test_read_only_workdir_is_one_line(tmp_path):
    parent = tmp_path / "ro"
    _make_read_only(parent)
    try:
        proc = _lmjax("train", "gpt_smoke", "--set", f"train.workdir={parent / 'run'}", *QUICK)
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(parent)])
        parent.chmod(0o755)
    err = _one_line(proc)
    assert err.startswith(f"error: cannot write {parent / 'run'}") and "train.workdir" in err


def _tmpfs(path: pathlib.Path, size: str) -> bool:
    path.mkdir()
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                                capture_output=True).returncode == 0


LIMITED = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))  # gpt_smoke's array files are larger
sys.argv = ["lmjax", *sys.argv[1:]]
runpy.run_module("lmjax", run_name="__main__")
"""


def test_full_disk_is_one_line_naming_the_directory(run, tmp_path):
    """A real full disk (a 300 KiB tmpfs) where mounting is allowed; elsewhere, writes cut off by a file size limit
    (`ulimit -f`: EFBIG, which TensorStore reports as ENOSPC's sibling). One line naming the checkpoint directory."""
    work = tmp_path / "disk" / "run"
    mounted = _tmpfs(tmp_path / "disk", "300k")
    args = ["train", "gpt_smoke", "--set", f"train.workdir={work}", *QUICK, "--set", "train.checkpoint_every=1",
            "--set", "train.eval_every=0"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LMJAX_JAX_CACHE": "off"}
    command = [sys.executable, "-m", "lmjax"] if mounted else [sys.executable, "-c", LIMITED]
    try:
        proc = subprocess.run([*command, *args], capture_output=True, text=True, env=env, timeout=300)
    finally:
        if mounted:
            subprocess.run(["umount", str(tmp_path / "disk")])
    err = _one_line(proc)
    assert err.startswith(f"error: cannot save checkpoint step 1 in {work / 'checkpoints'}: "), err
    assert ("no space left" if mounted else "file size limit") in err


def test_storage_errors_from_python_and_tensorstore_are_recognised():
    assert storage_error(OSError(errno.ENOSPC, "No space left on device", "/x/y"))[2] == "/x/y"
    assert storage_error(OSError(errno.EROFS, "Read-only file system"))[0] == "the file system is read-only"
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = ValueError('RESOURCE_EXHAUSTED: Failed writing: "/d/f": No space left on device '
                                   "[os_error_code='28']")
    assert storage_error(wrapped) == ("no space left on the device",
                                      "free space there or set train.workdir to a disk with room", "/d/f")
    assert storage_error(ValueError("DATA_LOSS: bad manifest")) is None


# ------------------------------------------------------------------------------------------------------ signals


def test_sigterm_mid_run_saves_the_last_completed_step_and_says_how_to_resume(tmp_path):
    work = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lmjax", "train", "gpt_smoke", "--set", f"train.workdir={work}",
                             "--set", "train.steps=100000", "--set", "train.log_every=1", *QUICK],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (work / "metrics.jsonl").exists() and len((work / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    lines = _lines(stderr)
    assert proc.returncode == 143 and len(lines) == 1, stderr[-3000:]
    step = int(lines[0].split(" at step ")[1].split(":")[0])
    assert lines[0] == (f"interrupted by SIGTERM at step {step}: saved a checkpoint of step {step} in "
                        f"{work / 'checkpoints'}; run the same command to resume")
    assert _steps(work / "checkpoints")[-1] == step
    assert not [p for p in (work / "checkpoints").iterdir() if "tmp" in p.name]


def test_sigint_during_start_up_exits_at_once_claiming_nothing(tmp_path):
    work = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "lmjax", "train", "gpt_smoke", "--set", f"train.workdir={work}",
                             *QUICK], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    time.sleep(0.5)  # importing JAX, building the model: long before the first step
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    lines = _lines(stderr)
    assert proc.returncode == 130 and len(lines) == 1, stderr[-3000:]
    if " at step " in lines[0]:  # a very fast machine reached the loop: then the checkpoint it names exists
        step = int(lines[0].split(" at step ")[1].split(":")[0])
        assert step in _steps(work / "checkpoints")
    else:
        assert lines[0] == "interrupted by SIGINT: nothing was saved; run the same command again"
        assert not (work / "checkpoints").exists() or not _steps(work / "checkpoints")


def test_interrupt_handlers_defer_inside_the_loop_and_restore_the_previous_ones():
    """In-process (library use): before `defer()` a signal raises Interrupted where the program is; after it, only
    the flag is set; leaving the block puts back the handlers that were there before."""
    from lmjax.train import interrupt

    before = signal.getsignal(signal.SIGTERM)
    with interrupt.signals() as stop:
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(interrupt.Interrupted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; never reached
        assert info.value.exit_code == 143 and info.value.step is None
        assert "SIGTERM: nothing was saved" in info.value.message()
    with interrupt.signals() as stop:
        with interrupt.signals() as inner:  # nested (train() inside the CLI): the same flag
            assert inner is stop
            stop.defer()
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert stop.requested and stop.signum == signal.SIGINT
            e = stop.interrupted(step=7, saved_in="/run/checkpoints")
            assert e.exit_code == 130 and isinstance(e, KeyboardInterrupt)
            assert e.message() == ("interrupted by SIGINT at step 7: saved a checkpoint of step 7 in /run/checkpoints; "
                                   "run the same command to resume")
        assert not stop.deferring  # the outer block's mode is back
        with pytest.raises(interrupt.Interrupted):
            stop.defer()  # a signal that arrived earlier is never lost
    assert signal.getsignal(signal.SIGTERM) is before
