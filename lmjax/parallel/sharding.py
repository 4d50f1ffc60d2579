"""Logical axis names -> `NamedSharding`s, validation that sharded dimensions divide the mesh, and host batches ->
global device arrays.

Parameters are annotated with logical names by `flax.linen.with_logical_partitioning`; `MeshConfig.rules` maps each
logical name to a mesh axis, a tuple of mesh axes, or None (replicated). This module is the only place that turns those
names into shardings.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lmjax.config import ConfigError


def rules_list(rules) -> list[tuple[str, Any]]:
    return [(name, tuple(ax) if isinstance(ax, list) else ax) for name, ax in rules]


def logical_to_mesh_spec(logical: P, rules) -> P:
    """Map a PartitionSpec of logical names to one of mesh axes (unknown names replicate)."""
    table = dict(rules_list(rules))
    return P(*(None if name is None else table.get(name) for name in logical))


def _axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(mesh.shape[a] for a in axes)


def path_str(path) -> str:
    """'/'-joined names of a pytree key path, e.g. 'h_0/attn/c_attn/kernel' (used in messages and freeze patterns)."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def validate_divisible(abstract_tree, spec_tree, mesh: Mesh, what: str = "parameter") -> None:
    """Raise a `ConfigError` naming the first array whose sharded dimension does not divide its mesh axes."""
    leaves = jax.tree_util.tree_leaves_with_path(abstract_tree)
    specs = jax.tree_util.tree_leaves(spec_tree, is_leaf=lambda x: isinstance(x, P))
    for (path, leaf), spec in zip(leaves, specs):
        for dim, axes in zip(leaf.shape, tuple(spec)):
            size = _axis_size(mesh, axes)
            if dim % size:
                ax = axes if isinstance(axes, str) else "x".join(axes)
                names = (axes,) if isinstance(axes, str) else axes
                knobs = " or ".join(f"mesh.{a}" for a in names)
                raise ConfigError(
                    f"{what} {path_str(path)} has a dimension of {dim} sharded over mesh axis {ax} of size {size}, "
                    f"which does not divide it: change the model size so {dim} becomes a multiple of {size}, or lower {knobs}"
                )


def param_shardings(abstract_variables, mesh: Mesh, rules):
    """NamedShardings for a (boxed, abstract) variables tree produced by `jax.eval_shape(model.init, ...)`.

    Returns (unboxed abstract tree, sharding tree). Arrays without logical names are replicated.
    """
    logical_specs = nn.get_partition_spec(abstract_variables)
    unboxed = nn.meta.unbox(abstract_variables)
    mesh_specs = jax.tree_util.tree_map(
        lambda s: logical_to_mesh_spec(s, rules), logical_specs, is_leaf=lambda x: isinstance(x, P)
    )
    validate_divisible(unboxed, mesh_specs, mesh)
    shardings = jax.tree_util.tree_map(
        lambda s: NamedSharding(mesh, s), mesh_specs, is_leaf=lambda x: isinstance(x, P)
    )
    return unboxed, shardings


def batch_spec(rules, leading: int = 0) -> P:
    """PartitionSpec of a batch array: `leading` unsharded axes (steps, micro-batches), then the logical 'batch' axis."""
    return P(*([None] * leading), dict(rules_list(rules)).get("batch"))


def batch_sharding(mesh: Mesh, rules, leading: int = 0) -> NamedSharding:
    return NamedSharding(mesh, batch_spec(rules, leading))


def check_batch_divisible(global_batch: int, mesh: Mesh, rules) -> None:
    size = _axis_size(mesh, dict(rules_list(rules)).get("batch"))
    if global_batch % size:
        raise ConfigError(
            f"data.batch_size={global_batch} is not divisible by the {size} devices the batch is sharded over: "
            f"set data.batch_size to a multiple of {size}"
        )
    if global_batch % jax.process_count():
        raise ConfigError(
            f"data.batch_size={global_batch} must divide evenly among {jax.process_count()} processes"
        )


def host_to_global(local_batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assemble each process's rows into one global `jax.Array` per key (rows split along the batch axis)."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
