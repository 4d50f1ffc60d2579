"""Multi-host start-up: join `jax.distributed` when the environment says this is one process of many.

- Explicit (any platform, also two processes on localhost in tests): `LMJAX_COORDINATOR=host:port`,
  `LMJAX_NUM_PROCESSES=N`, `LMJAX_PROCESS_ID=i`.
- TPU pod slices and SLURM/other clusters JAX detects itself: `LMJAX_DISTRIBUTED=1` (set by tpu_setup.sh), or a
  TPU VM whose `TPU_WORKER_HOSTNAMES` lists several hosts, calls `jax.distributed.initialize()` with no arguments.
"""

from __future__ import annotations

import os

import jax

_initialized = False


def maybe_initialize() -> bool:
    """Initialize `jax.distributed` once if the environment asks for it; return whether it is multi-process."""
    global _initialized
    if _initialized:
        return jax.process_count() > 1
    coordinator = os.environ.get("LMJAX_COORDINATOR")
    if coordinator:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=int(os.environ["LMJAX_NUM_PROCESSES"]),
            process_id=int(os.environ["LMJAX_PROCESS_ID"]),
        )
        _initialized = True
    elif os.environ.get("LMJAX_DISTRIBUTED", "") not in ("", "0") or "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""):
        jax.distributed.initialize()
        _initialized = True
    return jax.process_count() > 1


def is_main_process() -> bool:
    return jax.process_index() == 0
