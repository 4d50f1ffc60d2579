"""`lmjax compile`: a preset's real train step compiled for a TPU slice (needs the optional libtpu wheel)."""

import importlib.util

import pytest

from lmjax.train.compile_cli import compile_preset, markdown_table

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu not installed (optional: pip install -e '.[tpu]')")


def test_smoke_preset_compiles_fsdp_on_v5e_8():
    r = compile_preset("gpt_smoke", "v5e:2x4", ["mesh.fsdp=2", "data.batch_size=8", "model.vocab_size=65"])
    assert r["error"] is None and r["n_devices"] == 8 and r["device_kind"] == "TPU v5 lite"
    assert r["mesh"] == {"data": 4, "fsdp": 2, "tensor": 1}
    assert r["tokens_per_call"] == 8 * 16 and r["fits_in_hbm"]
    assert r["flops"] == pytest.approx(r["model_flops_per_call"] / 8)
    assert "| gpt_smoke | v5e:2x4 (8 x TPU v5 lite) | 4 x 2 x 1 |" in markdown_table([r])
