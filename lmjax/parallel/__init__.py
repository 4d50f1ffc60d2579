"""Device mesh, logical-axis sharding rules and multi-host helpers."""

from lmjax.parallel.distributed import is_main_process, maybe_initialize
from lmjax.parallel.mesh import MESH_AXES, make_mesh, mesh_shape
from lmjax.parallel.sharding import (
    batch_sharding,
    batch_spec,
    check_batch_divisible,
    host_to_global,
    logical_to_mesh_spec,
    param_shardings,
    validate_divisible,
)

__all__ = [
    "MESH_AXES", "batch_sharding", "batch_spec", "check_batch_divisible", "host_to_global", "is_main_process",
    "logical_to_mesh_spec", "make_mesh", "maybe_initialize", "mesh_shape", "param_shardings", "validate_divisible",
]
