"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: BERT's pretrain task (MLM + NSP) on 1 device vs
several 8-device meshes, on synthetic batches with padding rows and padded positions (no real data).

Prints one JSON line: per mesh, the max abs difference of the loss, the gradients, 3 train steps' losses and the
parameters after them against 1 device, and the sharding of a few parameters. SGD with momentum, as in
transformer_sharded.py (each update linear in the gradients, so agreeing gradients give agreeing parameters).
"""

import dataclasses
import json

import jax
import numpy as np

from lmjax.config import DataConfig, MeshConfig, OptimConfig, RunConfig, TrainConfig
from lmjax.models.bert import bert_config, make_pretraining_task
from lmjax.train.engine import Engine
from lmjax.train.task import Data

assert jax.device_count() == 8, jax.devices()
VOCAB, B, T, P = 256, 16, 16, 3
model = bert_config("smoke", hidden=32, heads=4, intermediate=64, vocab_size=VOCAB, max_position=32, dropout=0.0,
                    attention_dropout=0.0, max_predictions=P)
base = RunConfig(name="bert_sharded", task="pretrain", model=model,
                 data=DataConfig(dataset="synthetic", seq_len=T, batch_size=B),
                 optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9, schedule="constant"),
                 train=TrainConfig(steps=3, sample_tokens=0, progress=False, tensorboard=False, plot=False))
data = Data(tokenizer=None, vocab_size=VOCAB, train=None, info={})
rng = np.random.default_rng(0)


def batch():
    lengths = rng.integers(4, T + 1, B)
    lengths[-2:] = 0  # two padding rows
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int32)
    tokens = np.where(mask > 0, rng.integers(5, VOCAB, (B, T)), 0).astype(np.int32)
    positions = np.stack([np.sort(rng.choice(np.arange(1, max(n, 4)), P, replace=False)) for n in lengths])
    weights = (np.arange(P)[None] < np.minimum(P, np.maximum(lengths - 1, 0))[:, None]).astype(np.float32)
    return {"tokens": tokens, "segments": (np.arange(T)[None] >= lengths[:, None] // 2).astype(np.int32) * mask,
            "mask": mask, "masked_positions": positions.astype(np.int32),
            "masked_ids": rng.integers(5, VOCAB, (B, P)).astype(np.int32), "masked_weights": weights,
            "nsp_labels": rng.integers(0, 2, B).astype(np.int32), "real": (lengths > 0).astype(np.int32)}


batches = [batch() for _ in range(3)]


def engine(mesh=None, devices=None) -> Engine:
    cfg = base if mesh is None else dataclasses.replace(base, mesh=mesh)
    return Engine(cfg, data=data, task=make_pretraining_task(cfg, data), devices=devices)


one = engine(devices=jax.devices()[:1])
initial = jax.device_get(one.init_state())


def run(eng):
    state = jax.device_put(initial, eng.state_shardings)
    loss, grads = eng.loss_and_grads(state.params, batches[0])
    losses = []
    for b in batches:
        state, m = eng.train_steps(state, {k: v[None, None] for k, v in b.items()})
        losses.append(float(m["loss"][0]))
    return float(loss), jax.device_get(grads), losses, jax.device_get(state.params), state


def diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


ref_loss, ref_grads, ref_losses, ref_params, _ = run(one)
out = {"ref": {"loss": ref_loss, "train_losses": ref_losses, "param_change": diff(ref_params, initial.params)}}
WATCH = {"c_fc": ("bert", "layers_0", "mlp", "c_fc", "kernel"), "tok_embed": ("bert", "tok_embed"),
         "c_attn": ("bert", "layers_1", "attn", "c_attn", "kernel")}
MESHES = {"data8": MeshConfig(data=8), "fsdp8": MeshConfig(data=1, fsdp=8),
          "data2_fsdp2_tensor2": MeshConfig(data=2, fsdp=2, tensor=2), "data4_tensor2": MeshConfig(data=4, tensor=2)}
for name, mesh in MESHES.items():
    eng = engine(mesh)
    loss, grads, losses, p, state = run(eng)
    shards = {}
    for label, path in WATCH.items():
        leaf = state.params
        for part in path:
            leaf = leaf[part]
        shards[label] = {"spec": str(leaf.sharding.spec), "shard_shape": list(leaf.addressable_shards[0].data.shape)}
    out[name] = {"loss_diff": abs(loss - ref_loss), "grad_diff": diff(grads, ref_grads),
                 "train_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
                 "param_diff": diff(p, ref_params), "shards": shards}
print(json.dumps(out))
