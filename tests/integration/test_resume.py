"""Kill -9 a training run at a random step, resume it: the losses after the resume point equal an uninterrupted run
bit for bit. SIGTERM at a random step loses no step at all. A checkpoint written on 8 devices resumes on 1."""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest

import numpy as np

WORKER = pathlib.Path(__file__).parent / "resume_worker.py"
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}


def _losses(workdir: pathlib.Path) -> dict[int, float]:
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("split", "train") == "train" and "loss" in rec:
            out[rec["step"]] = rec["loss"]
    return out


def _run(workdir, steps, *extra, env=ENV):
    proc = subprocess.run([sys.executable, str(WORKER), str(workdir), str(steps), *map(str, extra)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("preset", ["", "tbptt_smoke"])  # the toy task, and one that carries its state (TBPTT)
def test_sigkill_and_resume_is_bit_exact(tmp_path, preset):
    env = {**ENV, "RESUME_PRESET": preset}
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    _run(ref_dir, 60, env=env)
    kill_at = random.Random().randint(12, 45)
    proc = subprocess.Popen([sys.executable, str(WORKER), str(run_dir), "60", "0.05"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.jsonl").exists() and max(_losses(run_dir) or {0: 0}) >= kill_at:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(_losses(run_dir))
    summary = _run(run_dir, 60, env=env)
    assert summary["step"] == 60
    ref, got = _losses(ref_dir), _losses(run_dir)
    resumed_from = (killed_at // 10) * 10
    assert resumed_from < 60 and set(got) == set(ref)
    after = [s for s in sorted(ref) if s > resumed_from]
    assert after and [got[s] for s in after] == [ref[s] for s in after]  # bit for bit
    assert [got[s] for s in sorted(ref)] == [ref[s] for s in sorted(ref)]


def test_sigterm_at_a_random_step_loses_no_step_and_resumes_bit_exact(tmp_path):
    """What a preempted VM gets: SIGTERM. The run finishes its compiled call, saves that step (not only the last
    checkpoint_every multiple), exits 143; the resumed run's losses equal an uninterrupted run's, every one."""
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    _run(ref_dir, 40)
    stop_at = random.Random().randint(3, 30)
    proc = subprocess.Popen([sys.executable, str(WORKER), str(run_dir), "40", "0.05"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (run_dir / "metrics.jsonl").exists() and max(_losses(run_dir) or {0: 0}) >= stop_at:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    stopped_at = max(_losses(run_dir))
    assert stderr.strip().splitlines()[-1] == (f"interrupted by SIGTERM at step {stopped_at}: saved a checkpoint of "
                                               f"step {stopped_at} in {run_dir / 'checkpoints'}; run the same "
                                               "command to resume")
    assert not [p for p in (run_dir / "checkpoints").iterdir() if "tmp" in p.name]
    summary = _run(run_dir, 40)
    assert summary["step"] == 40
    ref, got = _losses(ref_dir), _losses(run_dir)
    assert set(got) == set(ref) == set(range(1, 41))
    assert [got[s] for s in sorted(ref)] == [ref[s] for s in sorted(ref)]  # bit for bit, none lost or repeated
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in lines if r.get("split", "train") == "train" and "loss" in r]
    assert steps == sorted(set(steps)), "a step was trained twice"


def test_eight_device_checkpoint_resumes_on_one(tmp_path):
    eight = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    _run(tmp_path / "a", 40, 0, 8, 20, env=eight)  # the first 20 of 40 steps on 8 devices
    ref = _run(tmp_path / "ref", 40, 0, 8, env=eight)  # uninterrupted on 8 devices
    got = _run(tmp_path / "a", 40, 0, 1)  # resume the 8-device checkpoint on 1 device
    assert got["step"] == 40
    a, r = _losses(tmp_path / "a"), _losses(tmp_path / "ref")
    np.testing.assert_allclose([a[s] for s in range(21, 41)], [r[s] for s in range(21, 41)], rtol=1e-5)
