"""Fixtures shared by the whole suite: the offline datasets, and a private cache of prepared datasets."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Set before any test imports JAX, and inherited by the subprocesses tests start:
# - CPU only (a libtpu in the environment would otherwise claim the TPU lock and print warnings);
# - a private cache (compiled programs shared by this session's processes; nothing read from or left in ~/.cache);
# - a fixed MFU denominator: tests never assert timings, so they skip measuring the matmul peak.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("LMJAX_CACHE_DIR", tempfile.mkdtemp(prefix="lmjax-test-cache-"))
os.environ.setdefault("LMJAX_PEAK_GFLOPS", "100")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline datasets: `$LMJAX_DATA_DIR`, else `shared/data` beside the repository.

    Missing data skips the test, except under CI=true, where it fails: CI must not pass by skipping.
    """
    path = Path(os.environ.get("LMJAX_DATA_DIR") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        message = f"offline datasets not found at {path}: set LMJAX_DATA_DIR to a directory laid out like shared/data"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session", autouse=True)
def _private_tfds_dir(tmp_path_factory):
    """Prepare datasets into this session's own directory: tests neither read nor fill the user's cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LMJAX_TFDS_DIR", str(tmp_path_factory.mktemp("tfds")))
        yield
