"""The device mesh: three named axes, `data`, `fsdp` and `tensor`, sized from `MeshConfig`.

Layers never name these axes; they name logical axes (`embed`, `mlp`, `heads`, ...) and the rules table in
`MeshConfig.rules` maps logical names onto this mesh (see `lmjax.parallel.sharding`).
"""

from __future__ import annotations

import math

import jax
from jax.sharding import AxisType, Mesh

from lmjax.config import ConfigError, MeshConfig

MESH_AXES = ("data", "fsdp", "tensor")


def mesh_shape(cfg: MeshConfig, n_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes; `data=-1` takes the devices left after fsdp x tensor."""
    for name in MESH_AXES:
        size = getattr(cfg, name)
        if size == 0 or size < -1 or (size == -1 and name != "data"):
            raise ConfigError(f"mesh.{name}={size} is invalid: use a positive size (mesh.data may be -1 = the rest)")
    rest = cfg.fsdp * cfg.tensor
    data = n_devices // rest if cfg.data == -1 else cfg.data
    shape = (data, cfg.fsdp, cfg.tensor)
    if data < 1 or math.prod(shape) != n_devices:
        raise ConfigError(
            f"mesh data={cfg.data} x fsdp={cfg.fsdp} x tensor={cfg.tensor} does not cover the {n_devices} available "
            f"devices: set mesh.data, mesh.fsdp and mesh.tensor so their product is {n_devices} (mesh.data=-1 fills the rest)"
        )
    return shape


def make_mesh(cfg: MeshConfig, devices: list | None = None) -> Mesh:
    """A `Mesh` over all (global) devices with Auto axis types, so GSPMD propagates shardings through the model."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(cfg, len(devices))
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices)
