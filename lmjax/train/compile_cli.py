"""`lmjax compile PRESET --topology T`: compile a preset's train step for a TPU slice on this host and report it.

The Engine is built exactly as `lmjax train` builds it, but over the device descriptions of a TPU topology
(`aot.tpu_topology_devices`, needs the `libtpu` wheel, no TPU): the mesh (`mesh.*`), the parameter, optimizer-state
and batch shardings, and the jitted multi-step all come from the config. The state and batches are
`ShapeDtypeStruct`s, so nothing is allocated; `aot.compile_report` runs the TPU compiler and reads per-device memory
(against the chip's HBM), FLOPs and a roofline step time. FLOPs are the model's (the task's `flops_per_token` times
the tokens of one compiled call, per device), so the MFU is model-FLOPs utilisation at the chip's bf16 peak.

    lmjax compile gpt2_1_5b --topology v5e:2x4 --set mesh.fsdp=8 --set data.batch_size=8 \
        --set optim.grad_accum=1 --set train.dtype=bfloat16
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import jax

from lmjax.config import ConfigError, get_preset
from lmjax.parallel.aot import compile_report, format_report, tpu_topology_devices
from lmjax.train.engine import Engine
from lmjax.train.task import Data, get_task


def compile_preset(preset: str, topology: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """`aot.compile_report` of one compiled train call of `preset` (with `--set` overrides) on a TPU `topology`.

    Adds to the report: preset, topology, mesh (data, fsdp, tensor), tokens_per_call, model_flops_per_call (all
    devices) and params (count)."""
    cfg = get_preset(preset, list(overrides))
    # Shapes only: the vocabulary comes from the config, not from a tokenizer trained on the data.
    vocab = getattr(cfg.model, "vocab_size", 0) or cfg.data.vocab_size
    if not vocab:
        raise ConfigError(f"preset {preset!r} takes its vocabulary size from its tokenizer: set model.vocab_size=N "
                          f"to compile without the data")
    devices = tpu_topology_devices(topology)
    data = Data(tokenizer=None, vocab_size=vocab, train=None)
    task = get_task(cfg).build(cfg, data)
    engine = Engine(cfg, data=data, task=task, devices=devices)

    steps, accum = cfg.train.steps_per_call, cfg.optim.grad_accum
    batches = {k: jax.ShapeDtypeStruct((steps, accum, *v.shape), v.dtype, sharding=engine.batch_shardings[k])
               for k, v in task.example_batch.items()}
    tokens = steps * accum * cfg.data.batch_size * task.tokens_per_example
    model_flops = task.flops_per_token * tokens
    state = engine.abstract_state()
    with engine.activate():
        report = compile_report(engine._train, (state, batches), flops=model_flops / len(devices))
    return {"preset": preset, "topology": topology, "mesh": dict(engine.mesh.shape), "tokens_per_call": tokens,
            "model_flops_per_call": model_flops,
            "params": sum(int(p.size) for p in jax.tree.leaves(state.params)), **report}


def markdown_table(reports: Sequence[dict[str, Any]]) -> str:
    """One README row per report: slice, mesh, per-device memory vs HBM, FLOPs, projected step time and MFU."""
    gib = 1024**3
    rows = ["| preset | slice | mesh (data x fsdp x tensor) | tokens/step | memory per device | fits | "
            "model TFLOP per device | projected step (compute, memory bound) | MFU |", "|" + " --- |" * 9]
    for r in reports:
        mesh = " x ".join(str(r["mesh"].get(a, 1)) for a in ("data", "fsdp", "tensor"))
        chips = f"{r['topology']} ({r['n_devices']} x {r['device_kind']})"
        if r["error"]:
            rows.append(f"| {r['preset']} | {chips} | {mesh} | {r['tokens_per_call']:,} | > {r['hbm_bytes'] / gib:.0f}"
                        f" GiB | no | | | |")
            continue
        rows.append(f"| {r['preset']} | {chips} | {mesh} | {r['tokens_per_call']:,} | {r['total_bytes'] / gib:.2f} of "
                    f"{r['hbm_bytes'] / gib:.0f} GiB | {'yes' if r['fits_in_hbm'] else 'no'} | "
                    f"{r['flops'] / 1e12:.2f} | {r['step_s'] * 1e3:.0f} ms ({r['compute_s'] * 1e3:.0f}, "
                    f"{r['memory_s'] * 1e3:.0f}) | {r['mfu']:.0%} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lmjax compile", description=__doc__.split("\n")[0])
    p.add_argument("preset")
    p.add_argument("--topology", required=True, help="e.g. v5e:2x4, v5litepod-8, v4-32, v4:2x2x4")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    try:
        report = compile_preset(args.preset, args.topology, args.set)
    except (ImportError, ValueError) as e:  # no libtpu; a bad preset, override or topology (ConfigError)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0 if not report["error"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
