"""The CPU and device description, vendor peaks, and the measured, cached matmul peak."""

import json
import math
import os

import jax
import pytest

from lmjax import hardware, runtime

REAL_CPU_INFO = hardware.cpu_info  # tests patch `hardware.cpu_info` with a parse of a fixed /proc/cpuinfo


def _cpuinfo(vendor: str, family: int, model: int, stepping: int = 1, name: str = "AMD EPYC") -> str:
    block = (f"processor\t: {{i}}\nvendor_id\t: {vendor}\ncpu family\t: {family}\nmodel\t\t: {model}\n"
             f"model name\t: {name}\nstepping\t: {stepping}\nflags\t\t: fpu sse avx2\n")
    return "\n".join(block.format(i=i) for i in range(2))


# ------------------------------------------------------------------------------------------------------------ CPU


def test_zen4_and_zen5_with_the_same_name_are_told_apart():
    zen4 = hardware.cpu_info(_cpuinfo("AuthenticAMD", 25, 17))  # Genoa, as a cloud VM names it: "AMD EPYC"
    zen5 = hardware.cpu_info(_cpuinfo("AuthenticAMD", 26, 2))  # Turin
    assert zen4.name == zen5.name == "AMD EPYC"
    assert (zen4.vendor, zen4.family, zen4.model, zen4.microarchitecture) == ("AMD", 25, 17, "Zen 4")
    assert (zen5.vendor, zen5.family, zen5.model, zen5.microarchitecture) == ("AMD", 26, 2, "Zen 5")
    assert zen4.describe() == "AMD EPYC (Zen 4, family 25 model 17)"
    assert zen5.describe() == "AMD EPYC (Zen 5, family 26 model 2)"


@pytest.mark.parametrize("vendor,family,model,stepping,arch", [
    ("AMD", 25, 1, 1, "Zen 3"),  # Milan: family 25 is not only Zen 4
    ("AMD", 25, 0x61, 2, "Zen 4"),  # Raphael
    ("AMD", 25, 0xA0, 1, "Zen 4"),  # Bergamo
    ("AMD", 23, 0x31, 0, "Zen 2"),  # Rome
    ("AMD", 23, 0x01, 2, "Zen/Zen+"),  # Naples
    ("Intel", 6, 143, 8, "Sapphire Rapids"),
    ("Intel", 6, 207, 2, "Emerald Rapids"),
    ("Intel", 6, 106, 6, "Ice Lake"),
    ("Intel", 6, 85, 4, "Skylake"),  # one model number, three generations by stepping
    ("Intel", 6, 85, 7, "Cascade Lake"),
    ("Intel", 6, 85, 11, "Cooper Lake"),
    ("Intel", 6, 79, 1, "Broadwell"),
    ("Intel", 6, 85, None, None),
    ("AMD", 26, 0x55, 0, None),  # not (yet) in the table
    ("Intel", 19, 1, 0, None),
    ("Hygon", 24, 1, 1, None),
    (None, None, None, None, None),
])
def test_microarchitecture_table(vendor, family, model, stepping, arch):
    assert hardware.microarchitecture(vendor, family, model, stepping) == arch


def test_unknown_cpu_still_shows_its_numbers():
    cpu = hardware.cpu_info(_cpuinfo("GenuineIntel", 6, 250, name="Intel(R) Xeon(R) Future"))
    assert cpu.microarchitecture is None and cpu.vendor == "Intel"
    assert cpu.describe() == "Intel(R) Xeon(R) Future (family 6 model 250)"


def test_cpu_without_x86_fields():
    # An ARM /proc/cpuinfo has no vendor_id, cpu family or model name lines.
    cpu = hardware.cpu_info("processor\t: 0\nBogoMIPS\t: 50.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd4f\n")
    assert cpu.family is cpu.model is cpu.microarchitecture is cpu.vendor is None
    assert cpu.name and cpu.describe() == cpu.name
    assert 1 <= cpu.cores <= cpu.total_cores


def test_this_machine_parses():
    cpu = hardware.cpu_info()
    assert cpu.name and cpu.cores >= 1
    if os.path.exists("/proc/cpuinfo") and "cpu family" in open("/proc/cpuinfo").read():
        assert isinstance(cpu.family, int) and isinstance(cpu.model, int)


# ------------------------------------------------------------------------------------------------- description


def test_hardware_info_and_line(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_info", lambda: REAL_CPU_INFO(_cpuinfo("AuthenticAMD", 26, 2)))
    monkeypatch.delenv(hardware.PEAK_ENV, raising=False)
    monkeypatch.setattr(hardware, "measured_peak_gflops", lambda dtype, device=None: 341.6)
    info = hardware.hardware_info()
    assert (info["cpu"], info["cpu_vendor"], info["cpu_family"], info["cpu_model"]) == ("AMD EPYC", "AMD", 26, 2)
    assert info["microarchitecture"] == "Zen 5" and info["matmul_peak_gflops"] == 341.6
    assert info["jax_version"] == jax.__version__ and info["jax_platform"] == jax.devices()[0].platform
    assert info["jax_devices"] == f"{len(jax.devices())} x {jax.devices()[0].device_kind}"
    line = info["hardware"]
    assert line.startswith(f"AMD EPYC (Zen 5, family 26 model 2), {info['cpu_cores']} of {os.cpu_count()} cores")
    assert "fp32 matmul peak 342 GFLOP/s" in line and f"jax {jax.__version__} on " in line
    assert "load average" in line
    if jax.devices()[0].platform == "cpu":  # accelerators only: "N x <device kind>"
        assert " x " not in line
    assert hardware.hardware_summary(100.0) == hardware.hardware_info(100.0)["hardware"]


def test_hardware_info_peak_sources(monkeypatch):
    monkeypatch.setattr(hardware, "measured_peak_gflops", lambda *a, **k: pytest.fail("measured despite a peak"))
    monkeypatch.setenv(hardware.PEAK_ENV, "123")
    assert "fp32 matmul peak 123 GFLOP/s (from LMJAX_PEAK_GFLOPS)" in hardware.hardware_summary()
    info = hardware.hardware_info(250.04)  # measured by the caller: that number, no note
    assert info["matmul_peak_gflops"] == 250.0 and "peak 250 GFLOP/s," in info["hardware"]


# ---------------------------------------------------------------------------------------------- vendor peaks


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
    assert hardware.vendor_peak_flops(kind, dtype) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("kind", ["cpu", "NVIDIA L40S", "TPU v7x", "NVIDIA GeForce RTX 4090"])
def test_unknown_kinds_have_no_vendor_peak(kind):
    assert hardware.vendor_peak_flops(kind, "bfloat16") is None


# ---------------------------------------------------------------------------------------------- measured peak


def test_measure_matmul_peak_runs_both_paths():
    # One dot per call, then (a tiny n under a long minimum call time) the chained fori_loop path.
    assert 0 < hardware.measure_matmul_peak(n=128, repeats=2, min_call_s=0.0) < math.inf
    assert 0 < hardware.measure_matmul_peak("bfloat16", n=64, repeats=2, min_call_s=0.01, statistic="best") < math.inf
    with pytest.raises(ValueError):
        hardware.measure_matmul_peak(n=64, statistic="mean")


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv(runtime.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(hardware.PEAK_ENV, raising=False)
    monkeypatch.setattr(hardware, "_MEASURED", {})
    return tmp_path


def _new_process():
    hardware._MEASURED.clear()  # what a fresh process starts with: only the file cache


def test_peak_is_measured_once_then_read_from_the_cache(cache_home, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet machine
    calls = []

    def fake_measure(dtype="float32", n=2048, repeats=7, device=None, min_call_s=0.02, statistic="median"):
        calls.append(jax.numpy.dtype(dtype).name)
        return 100.0 + len(calls)

    monkeypatch.setattr(hardware, "measure_matmul_peak", fake_measure)
    assert hardware.device_peak_flops("float32") == 101e9
    assert hardware.device_peak_flops("float32") == 101e9  # same process
    _new_process()
    assert hardware.device_peak_flops("float32") == 101e9  # from the file: not measured again
    assert hardware.measured_peak_gflops("float32") == 101.0
    assert calls == ["float32"]

    path = cache_home / "matmul_peak.json"
    assert hardware.peak_cache_path() == str(path)
    (key, entry), = json.loads(path.read_text()).items()
    assert entry["gflops"] == 101.0 and "measured" in entry
    assert key.startswith("cpu|") and "|float32|" in key and f"jax {jax.__version__}" in key
    cpu = hardware.cpu_info()
    assert f"{cpu.describe()} x{cpu.cores}" in key  # family and model too: one name may be two generations

    assert hardware.device_peak_flops("bfloat16") == 102e9  # another dtype is another entry
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # the same host peak
    assert hardware.device_peak_flops("float32") == 101e9
    monkeypatch.setenv("XLA_FLAGS", runtime.YNN_FLAG)  # other XLA flags make another entry
    assert hardware.device_peak_flops("float32") == 103e9
    assert calls == ["float32", "bfloat16", "float32"]
    assert len(json.loads(path.read_text())) == 3


def test_another_cpu_generation_is_another_entry(cache_home, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    peaks = iter([190.0, 342.0])
    monkeypatch.setattr(hardware, "measure_matmul_peak", lambda *a, **k: next(peaks))
    monkeypatch.setattr(hardware, "cpu_info", lambda: REAL_CPU_INFO(_cpuinfo("AuthenticAMD", 25, 17)))
    assert hardware.measured_peak_gflops() == 190.0
    _new_process()  # the same cache directory on a Zen 5 machine of the same name
    monkeypatch.setattr(hardware, "cpu_info", lambda: REAL_CPU_INFO(_cpuinfo("AuthenticAMD", 26, 2)))
    assert hardware.measured_peak_gflops() == 342.0


def test_peak_measured_on_a_busy_machine_is_remeasured(cache_home, monkeypatch):
    results = iter([80.0, 60.0, 120.0])
    monkeypatch.setattr(hardware, "measure_matmul_peak", lambda *a, **k: next(results))
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0 * hardware._n_cores() + 1, 0.0, 0.0))
    assert hardware.device_peak_flops() == 80e9
    assert hardware.device_peak_flops() == 80e9  # at most one measurement per process
    _new_process()
    assert hardware.device_peak_flops() == 80e9  # busy again and slower: the best so far stands
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    _new_process()
    assert hardware.device_peak_flops() == 120e9  # measured on a quiet machine: kept for good
    _new_process()
    assert hardware.device_peak_flops() == 120e9
    (entry,) = json.loads((cache_home / "matmul_peak.json").read_text()).values()
    assert entry["gflops"] == 120.0 and entry["busy"] is False


def test_simulated_cpu_devices_share_the_host_peak(cache_home, monkeypatch):
    monkeypatch.setattr(hardware, "measure_matmul_peak", lambda *a, **k: 400.0)
    assert hardware.device_peak_flops() == 400e9
    # As under --xla_force_host_platform_device_count=4: four devices on the same cores, a quarter each.
    cpu = jax.devices("cpu")[0]
    monkeypatch.setattr(jax, "local_devices", lambda *a, **k: [cpu] * 4)
    assert hardware.device_peak_flops() == 100e9
    assert hardware.measured_peak_gflops() == 400.0  # the host's, as the hardware line reports it


def test_env_override_skips_measurement(cache_home, monkeypatch):
    monkeypatch.setattr(hardware, "measure_matmul_peak", lambda *a, **k: pytest.fail("measured despite override"))
    monkeypatch.setenv(hardware.PEAK_ENV, "123.5")
    assert hardware.device_peak_flops("float32") == 123.5e9
    assert not (cache_home / "matmul_peak.json").exists()


def test_corrupt_cache_file_is_remeasured(cache_home, monkeypatch):
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    (cache_home / "matmul_peak.json").write_text("{not json")
    monkeypatch.setattr(hardware, "measure_matmul_peak", lambda *a, **k: 50.0)
    assert hardware.device_peak_flops() == 50e9
    (entry,) = json.loads((cache_home / "matmul_peak.json").read_text()).values()
    assert entry["gflops"] == 50.0
