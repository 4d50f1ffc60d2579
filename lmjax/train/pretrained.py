"""Pretrained initialisation: start a fresh run from (part of) the parameters another run saved.

    train.init_from=runs/gpt_imdb   train.init_source=""   train.init_target=gpt

loads the latest readable checkpoint of runs/gpt_imdb, takes the subtree `init_source` of its parameters (all of
them here) and puts it at `init_target` of the new model's parameters (the classifier's trunk, `params["gpt"]`);
everything else keeps its fresh initialisation. Structure and shapes must match exactly. With `optim.freeze`
patterns this gives frozen, partially frozen and fully fine-tuned transfer as config values.
"""

from __future__ import annotations

import logging
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from lmjax.config import ConfigError
from lmjax.parallel.sharding import path_str

log = logging.getLogger(__name__)


def _steps(directory: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def load_params(run_dir: str | pathlib.Path) -> tuple[int, dict]:
    """(step, parameters as host NumPy arrays) of the latest readable checkpoint of a run directory."""
    run_dir = pathlib.Path(run_dir).expanduser()
    directory = run_dir / "checkpoints" if (run_dir / "checkpoints").is_dir() else run_dir
    steps = _steps(directory)
    if not steps:
        raise ConfigError(f"train.init_from={str(run_dir)!r} holds no checkpoint: train that run first or point "
                          "train.init_from at a run directory with checkpoints/")
    device = jax.local_devices()[0]
    errors = []
    with ocp.StandardCheckpointer() as checkpointer:
        for step in steps[::-1]:
            path = (directory / str(step) / "state").absolute()
            try:
                meta = checkpointer.metadata(path)
                tree = getattr(meta, "item_metadata", meta)
                tree = getattr(tree, "tree", tree)
                restored = checkpointer.restore(path, _full_target(tree, device))
                return step, jax.device_get(restored["params"])
            except Exception as e:  # noqa: BLE001 - a broken step raises anything; try the one before
                errors.append(f"step {step}: {type(e).__name__}")
                log.warning("train.init_from: checkpoint step %d in %s is unreadable (%s); trying an older one",
                            step, directory, type(e).__name__)
    raise ConfigError(f"train.init_from={str(run_dir)!r}: no readable checkpoint ({'; '.join(errors)})")


def _full_target(tree, device):
    """Restore target for a whole saved state (scalars and arrays on one device)."""
    def leaf(m):
        shape = tuple(getattr(m, "shape", ()) or ())
        return jax.ShapeDtypeStruct(shape, m.dtype, sharding=jax.sharding.SingleDeviceSharding(device))

    return jax.tree_util.tree_map(leaf, tree, is_leaf=lambda x: hasattr(x, "dtype"))


def subtree(tree: dict, path: str, what: str) -> dict:
    node = tree
    for key in [k for k in path.split("/") if k]:
        if not isinstance(node, dict) or key not in node:
            have = ", ".join(sorted(node)) if isinstance(node, dict) else "a leaf"
            raise ConfigError(f"{what}={path!r}: no {key!r} in the parameters (has {have})")
        node = node[key]
    return node


def _only(tree: dict, paths: set[str], prefix: str = "") -> dict:
    """The nested dict `tree` restricted to the leaves whose '/'-paths are in `paths`."""
    out = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            kept = _only(value, paths, path)
            if kept:
                out[key] = kept
        elif path in paths:
            out[key] = value
    return out


def graft(params: dict, source: dict, target_path: str) -> dict:
    """`params` with the subtree at `target_path` replaced by `source`, after checking that every parameter there
    is in `source` with its shape; leaves only `source` has (a pooler a tagging head does not read) are dropped,
    with a warning."""
    target = subtree(params, target_path, "train.init_target")
    want = {path_str(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(target)}
    have = {path_str(p): np.shape(x) for p, x in jax.tree_util.tree_leaves_with_path(source)}
    problems = [f"{k} missing from the checkpoint" for k in sorted(want.keys() - have.keys())]
    problems += [f"{k}: checkpoint {have[k]} vs model {want[k]}" for k in sorted(want.keys() & have.keys())
                 if have[k] != want[k]]
    if problems:
        more = f"; and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise ConfigError(f"train.init_from parameters do not fit train.init_target={target_path!r} "
                          f"({'; '.join(problems[:3])}{more}): use the pretrained run's model config and tokenizer")
    unused = sorted(have.keys() - want.keys())
    if unused:  # e.g. a pooler the new head does not read: as Hugging Face's "weights not used" warning
        log.warning("train.init_from: %d checkpoint parameters are not used by the model (%s%s)", len(unused),
                    ", ".join(unused[:4]), ", ..." if len(unused) > 4 else "")
        source = _only(source, set(want))
    keys = [k for k in target_path.split("/") if k]
    if not keys:
        return jax.tree_util.tree_map(lambda t, s: np.asarray(s, t.dtype), target, source)

    def put(node, rest):
        if not rest:
            return jax.tree_util.tree_map(lambda t, s: np.asarray(s, t.dtype), node, source)
        return {**node, rest[0]: put(node[rest[0]], rest[1:])}

    return put(params, keys)


EXPORTED_FILES = ("config.json", "metrics.jsonl", "corpus.json")


def export_params(run_dir: str | pathlib.Path, out_dir: str | pathlib.Path) -> tuple[int, pathlib.Path]:
    """Write the parameters of `run_dir`'s latest checkpoint (no optimizer state: a third of the bytes of an Adam
    checkpoint) as a run-shaped directory that `train.init_from` and `data.tokenizer_dir` read like the run itself:
    out_dir/checkpoints/<step>/state ({"params": ...}), with the run's tokenizer/, config.json, metrics.jsonl and
    corpus.json where it has them. Returns (step, out_dir)."""
    import shutil

    run_dir, out_dir = pathlib.Path(run_dir).expanduser(), pathlib.Path(out_dir).expanduser()
    if out_dir.resolve() == run_dir.resolve():
        raise ConfigError(f"export: the output directory {str(out_dir)!r} is the run directory itself: choose another")
    step, params = load_params(run_dir)
    target = out_dir / "checkpoints" / str(step) / "state"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    target.parent.mkdir(parents=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(target.absolute(), {"params": params})
    if (run_dir / "tokenizer").is_dir():
        shutil.copytree(run_dir / "tokenizer", out_dir / "tokenizer")
    for name in EXPORTED_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, out_dir / name)
    return step, out_dir
