"""Two processes on localhost joined by jax.distributed (4 devices each) train exactly like one process."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

WORKER = pathlib.Path(__file__).parent / "multiprocess_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int, **extra) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", **extra}


def test_two_processes_equal_one():
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(4, LMJAX_COORDINATOR=f"127.0.0.1:{port}", LMJAX_NUM_PROCESSES="2",
                                       LMJAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    single = subprocess.run([sys.executable, str(WORKER)], capture_output=True, text=True, env=_env(8), timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ref = json.loads(single.stdout.strip().splitlines()[-1])
    assert [o["processes"] for o in outs] == [2, 2] and all(o["devices"] == 8 for o in outs)
    assert ref["processes"] == 1 and ref["devices"] == 8
    for o in outs:
        np.testing.assert_allclose(o["losses"], ref["losses"], rtol=1e-6)
        np.testing.assert_allclose(o["eval_loss"], ref["eval_loss"], rtol=1e-6)
