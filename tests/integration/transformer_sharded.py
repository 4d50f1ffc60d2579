"""Run under XLA_FLAGS=--xla_force_host_platform_device_count=8: the Transformer's translate task on 1 device vs
several 8-device meshes, on token-budget batches of synthetic pairs (no real data).

Prints one JSON line: for each mesh, the max abs difference of the loss, the gradients, 3 train steps' losses and
the parameters after them against 1 device, and the sharding of a few parameters and of the batch.

The optimizer is SGD with momentum: each update is linear in the gradients, so gradients that agree give parameters
that agree. (Under Adam the attention key biases, whose gradient is 0 up to float noise because softmax ignores a
shift shared by all keys, move by about +-lr a step on noise alone, differently on each mesh.) Every mesh starts
from the 1-device train state, placed on its shardings, so no mesh compiles its own init.
"""

import dataclasses
import json
import types

import jax
import numpy as np

from lmjax.config import DataConfig, MeshConfig, OptimConfig, RunConfig, TrainConfig
from lmjax.data import TokenBudgetPairs
from lmjax.models.transformer import TransformerConfig, make_task
from lmjax.train.engine import Engine
from lmjax.train.task import Data

assert jax.device_count() == 8, jax.devices()
VOCAB, PAD, BOS, EOS = 256, 0, 1, 2
ROWS = 16  # max_tokens 128 over one (8, 8) bucket: 16 rows a batch, a multiple of every mesh's batch axes

rng = np.random.default_rng(0)
# 40 pairs in one bucket (src <= 8, tgt + eos <= 8): one batch shape, and the last batch has 8 empty rows
PAIRS = [(rng.integers(3, VOCAB, rng.integers(1, 9)), rng.integers(3, VOCAB, rng.integers(1, 8))) for _ in range(40)]

model = TransformerConfig(vocab_size=VOCAB, d_model=32, num_heads=4, d_ff=64, enc_layers=2, dec_layers=2, max_len=32,
                          dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, eval_bleu=False)
base = RunConfig(name="transformer_sharded", task="translate", model=model,
                 data=DataConfig(dataset="synthetic", batch_size=ROWS, max_tokens=128),
                 optim=OptimConfig(name="sgd", lr=0.1, momentum=0.9, schedule="constant"),
                 train=TrainConfig(steps=3, sample_tokens=0, progress=False, tensorboard=False, plot=False))
tokenizer = types.SimpleNamespace(pad_id=PAD, bos_id=BOS, eos_id=EOS, vocab_size=VOCAB)


def train_batches(process_index: int, process_count: int) -> TokenBudgetPairs:
    return TokenBudgetPairs(PAIRS, base.data.max_tokens, pad_id=PAD, bos_id=BOS, eos_id=EOS, seed=1,
                            process_index=process_index, process_count=process_count)


data = Data(tokenizer=tokenizer, vocab_size=VOCAB, train=train_batches, info={})


def engine(mesh: MeshConfig | None = None, devices=None) -> Engine:
    cfg = base if mesh is None else dataclasses.replace(base, mesh=mesh)
    return Engine(cfg, data=data, task=make_task(cfg, data), devices=devices)


one = engine(devices=jax.devices()[:1])
initial = jax.device_get(one.init_state())
params = initial.params
it = one.data.train(0, 1)
batches = [next(it) for _ in range(3)]
assert all(b["src"].shape == (ROWS, 8) and b["tgt_in"].shape == (ROWS, 8) for b in batches)
assert any(not b["src_mask"].any(1).all() for b in batches)  # some empty rows (all-False masks) are in the parity check


def run(eng: Engine):
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


def finite(tree) -> bool:
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree_util.tree_leaves(tree))


ref_loss, ref_grads, ref_losses, ref_params, _ = run(one)
out = {"ref": {"loss": ref_loss, "train_losses": ref_losses, "finite_grads": finite(ref_grads),
               "grad_norm": float(np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree_util.tree_leaves(ref_grads)))),
               "param_change": diff(ref_params, params)}}
WATCH = {"c_fc": ("decoder", "layers_0", "mlp", "c_fc", "kernel"),  # [d_ff, d_model]: (mlp, embed)
         "c_attn": ("encoder", "layers_1", "attn", "c_attn", "kernel"),  # [3, H, D, C]: (qkv, heads, kv, embed)
         "kv_attn": ("decoder", "layers_1", "cross_attn", "kv_attn", "kernel"),  # [2, H, D, C]
         "embed": ("embed", "embedding")}  # [V, C]: (vocab, embed)
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
        shards[label] = {"spec": str(leaf.sharding.spec), "shape": list(leaf.shape),
                         "shard_shape": list(leaf.addressable_shards[0].data.shape),
                         "n_shards": len(leaf.addressable_shards)}
    out[name] = {"loss_diff": abs(loss - ref_loss), "grad_diff": diff(grads, ref_grads),
                 "train_loss_diff": max(abs(a - b) for a, b in zip(losses, ref_losses)),
                 "param_diff": diff(p, ref_params), "finite": finite(grads) and finite(p), "shards": shards,
                 "batch_spec": str(eng.batch_rows.spec)}
print(json.dumps(out))
