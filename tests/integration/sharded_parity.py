"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: 1 device vs several 8-device meshes on the toy model.

Prints one JSON line: for each mesh, the max abs difference of loss and gradients against 1 device, the losses of 3
train steps, and the parameter specs it used.
"""

import dataclasses
import json
import sys

import jax
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/train")
from toy import toy_config  # noqa: E402

from lmjax.config import ConfigError, MeshConfig  # noqa: E402
from lmjax.train.engine import Engine  # noqa: E402

assert jax.device_count() == 8, jax.devices()
base = toy_config()
base = dataclasses.replace(base, model=dataclasses.replace(base.model, dropout=0.0))
one = Engine(base, devices=jax.devices()[:1])
params = jax.device_get(one.init_state().params)
it = one.data.train(0, 1)
batches = [next(it) for _ in range(3)]


def run(engine):
    state = engine.init_state()
    state = state.replace(params=jax.device_put(params, engine.param_shardings))
    loss, grads = engine.loss_and_grads(state.params, batches[0])
    losses = []
    for b in batches:
        state, m = engine.train_steps(state, {k: v[None, None] for k, v in b.items()})
        losses.append(float(m["loss"][0]))
    return float(loss), jax.device_get(grads), losses, jax.device_get(state.params), state


ref_loss, ref_grads, ref_losses, ref_params, _ = run(one)
out = {}
for name, mesh in {"data8": MeshConfig(data=8), "data2_fsdp2_tensor2": MeshConfig(data=2, fsdp=2, tensor=2),
                   "data4_tensor2": MeshConfig(data=4, tensor=2), "fsdp8": MeshConfig(data=1, fsdp=8)}.items():
    eng = Engine(dataclasses.replace(base, mesh=mesh))
    loss, grads, losses, p, state = run(eng)
    diff = lambda a, b: max(float(np.max(np.abs(x - y))) for x, y in  # noqa: E731
                            zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    out[name] = {
        "loss_diff": abs(loss - ref_loss), "grad_diff": diff(grads, ref_grads),
        "train_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)), "param_diff": diff(p, ref_params),
        "up_kernel_spec": str(state.params["up"]["kernel"].sharding.spec),
        "n_shards": len(state.params["up"]["kernel"].addressable_shards),
        "shard_shape": list(state.params["up"]["kernel"].addressable_shards[0].data.shape),
    }
try:
    Engine(dataclasses.replace(base, model=dataclasses.replace(base.model, vocab_size=30),
                               mesh=MeshConfig(data=2, tensor=4)))
    out["bad_dim_error"] = None
except ConfigError as e:
    out["bad_dim_error"] = str(e)
print(json.dumps(out))
