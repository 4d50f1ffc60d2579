"""8 simulated devices (data, fsdp, tensor meshes) give the same loss, gradients and updates as 1 device."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.fixture(scope="module")
def parity():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(HERE / "sharded_parity.py")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mesh", ["data8", "data2_fsdp2_tensor2", "data4_tensor2", "fsdp8"])
def test_eight_devices_match_one(parity, mesh):
    r = parity[mesh]
    assert r["loss_diff"] < 1e-5
    assert r["grad_diff"] < 1e-5
    assert r["train_loss_diff"] < 1e-5
    assert r["param_diff"] < 1e-5


def test_parameters_are_really_sharded(parity):
    # up/kernel is (embed=16, mlp=32) with embed -> fsdp and mlp -> tensor
    assert parity["data2_fsdp2_tensor2"]["up_kernel_spec"].endswith("('fsdp', 'tensor')")
    assert parity["data2_fsdp2_tensor2"]["shard_shape"] == [8, 16]
    assert parity["fsdp8"]["shard_shape"] == [2, 32]
    assert parity["data8"]["shard_shape"] == [16, 32]


def test_indivisible_dimension_names_param_and_fix(parity):
    msg = parity["bad_dim_error"]
    assert msg is not None and "30" in msg and "tensor" in msg and "mesh.tensor" in msg
