"""Checkpoints: an Orbax `CheckpointManager` with async saves, last-K + best retention and fallback on broken steps.

    ckpt = Checkpointer(workdir / "checkpoints", keep=3, best_metric="eval_loss")
    ckpt.save(step, state, extra={"data": it.state()}, metrics={"eval_loss": 2.1})   # returns while it writes
    step, state, extra = ckpt.restore(abstract_state)   # latest readable step, onto abstract_state's shardings

Layout: `directory/<step>/{state, extra, metrics}` (metrics only for scored saves). A step is written to `<step>.orbax-checkpoint-tmp` and renamed
to `<step>` on commit, so a process killed mid-save leaves only that temp dir: steps are listed (and restored) from
committed names only, and the temp dir is replaced when that step is saved again. Old steps are deleted only after
the new one has committed, so a kill never costs the last good checkpoint.

Retention (Orbax `preservation_policy`): the last `keep` steps, with or without metrics, plus the single best step by
`best_metric` among saves that reported it.

PRNG keys: typed key arrays (`jax.random.key`) are saved by Orbax as key data plus the implementation name and
restore as typed keys; raw uint32 keys round-trip as plain arrays. Neither needs conversion here.

Dtypes follow the restore target: a float32 checkpoint restored onto a bfloat16 target is cast. Shapes and tree
structure must match; a mismatch is reported as such instead of being mistaken for a broken step.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)


class _SkipUnscoredSaveWarning(logging.Filter):
    """Drops Orbax's warning for each save without metrics: saves between evaluations have none by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_SkipUnscoredSaveWarning())


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot give what was asked of it; the message names the fix."""


class Checkpointer:
    """Saves and restores `(state, extra)` pairs by step under `directory`; all processes of a job call every method.

    `state` is a pytree of (possibly sharded) jax.Arrays, `extra` a small JSON-able dict saved beside it. `metrics`
    given to `save` rank checkpoints when they contain `best_metric` (`best_mode` "min" or "max"); `best_metric=None`
    keeps only the last `keep`.
    """

    def __init__(self, directory, *, keep: int = 3, best_metric: str | None = "eval_loss", best_mode: str = "min",
                 async_save: bool = True):
        if keep < 1:
            raise ValueError(f"keep={keep} must be at least 1 (the latest checkpoint is needed to resume)")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode={best_mode!r} is unknown: use 'min' or 'max'")
        self.directory = pathlib.Path(directory).expanduser().absolute()
        self._best_metric = best_metric
        self._unreadable: set[int] = set()  # steps restore() found broken: the next save over them replaces them
        keep_policies: list = [policies.LatestN(n=keep)]
        score = None
        if best_metric:
            score = _Score(best_metric, best_mode)
            # Saves without the metric are already covered by LatestN, so BestN must not keep them forever.
            keep_policies.append(policies.BestN(get_metric_fn=score, reverse=best_mode == "min", n=1,
                                                keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(keep_policies),
            best_fn=score,  # Orbax writes metrics and answers best_step() only when best_fn is set
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
        )
        if jax.process_index() == 0:
            _set_aside_unlistable(self.directory)
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, state, *, extra: dict, metrics: dict | None = None, force: bool = False) -> None:
        """Starts saving `state` and `extra` as `step`; returns once the arrays are copied off the device (so the
        caller may donate them), after waiting for the previous save to commit.

        Steps must increase. A step at or below the latest one replaces it and every later step only with
        `force=True` (a run restarted from an earlier step), or when restore() found those later steps unreadable.
        """
        step = int(step)
        extra = _jsonable(extra)
        self._drop_steps_from(step, force)
        scored = metrics is not None and bool(self._best_metric) and self._best_metric in metrics
        self._mgr.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), extra=ocp.args.JsonSave(extra)),
            metrics={k: float(v) for k, v in metrics.items()} if scored else None,
            force=True,  # the caller decides when to save; Orbax's own interval policy must not skip any
        )

    def latest_step(self) -> int | None:
        """The newest step saved (or being saved), None if there is none."""
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        """Committed steps plus any being saved by this process, ascending."""
        return sorted(self._mgr.all_steps())

    def best_step(self) -> int | None:
        """The kept step with the best `best_metric`; None without `best_metric` or before any scored save."""
        if not self._best_metric:
            return None
        return self._mgr.best_step()

    def restore(self, target, step: int | None = None) -> tuple[int, Any, dict]:
        """`(step, state, extra)` with `state` shaped, typed and sharded like `target`.

        `target` holds `jax.ShapeDtypeStruct`s with `.sharding` (or concrete arrays), so a checkpoint restores onto
        any mesh. `step=None` takes the latest readable step: a broken one is reported in one warning and skipped.
        """
        self.wait()
        steps = self.all_steps()
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory}: train first, or point to the run's "
                                  "checkpoint directory")
        if step is not None and step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}: pick one of {steps}")
        candidates = [step] if step is not None else steps[::-1]
        for i, s in enumerate(candidates):
            try:
                out = self._mgr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                   extra=ocp.args.JsonRestore()))
                return s, out.state, dict(out.extra)
            except Exception as e:  # noqa: BLE001 - a broken step raises anything from KeyError to tensorstore errors
                error = e
                mismatch = self._mismatch(s, target)
                if mismatch:
                    raise CheckpointError(f"checkpoint step {s} in {self.directory} does not fit the model "
                                          f"({mismatch}): restore with the config that saved it (in extra['config']) "
                                          "or train into a fresh directory") from e
                if step is not None:
                    raise CheckpointError(f"checkpoint step {s} in {self.directory} is unreadable ({_brief(e)}): "
                                          f"restore another of {steps}") from e
                self._unreadable.add(s)
                older = candidates[i + 1:]
                log.warning("checkpoint step %d in %s is unreadable (%s); %s", s, self.directory, _brief(e),
                            f"falling back to step {older[0]}" if older else "no older step to fall back to")
        raise CheckpointError(f"no checkpoint in {self.directory} is readable (latest error: {_brief(error)}): "
                              "move the broken step directories aside or train into a fresh directory") from error

    def wait(self) -> None:
        """Blocks until pending async saves have committed (and old steps are deleted)."""
        self._mgr.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's threads."""
        self._mgr.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _drop_steps_from(self, step: int, force: bool) -> None:
        """Makes `step` the newest: deletes steps >= `step` if they are unreadable or `force` allows it."""
        later = [s for s in self.all_steps() if s >= step]
        if not later:
            return
        if not force and not set(later) <= self._unreadable:
            raise CheckpointError(f"step {step} is not after the latest checkpoint {later[-1]} in {self.directory}: "
                                  "resume from it, pass force=True to replace the later ones, or use a fresh directory")
        self.wait()  # a step being written cannot be deleted
        log.warning("replacing checkpoint steps %s in %s with step %d", later, self.directory, step)
        for s in later:
            self._mgr.delete(s)
        self._unreadable -= set(later)

    def _mismatch(self, step: int, target) -> str | None:
        """How `target` differs from the tree saved at `step` (paths or shapes); None if it fits or is unreadable."""
        try:
            saved = ocp.tree.to_flat_dict(self._mgr.item_metadata(step)["state"].tree)
        except Exception:  # noqa: BLE001 - unreadable metadata means a broken step, not a mismatch
            return None
        wanted = ocp.tree.to_flat_dict(target)
        name = "/".join
        problems = [f"{name(k)} not in the checkpoint" for k in sorted(wanted.keys() - saved.keys())]
        problems += [f"{name(k)} only in the checkpoint" for k in sorted(saved.keys() - wanted.keys())]
        problems += [f"{name(k)} saved {np.shape(saved[k])} but wanted {_stored_shape(wanted[k])}"
                     for k in sorted(wanted.keys() & saved.keys()) if np.shape(saved[k]) != _stored_shape(wanted[k])]
        if not problems:
            return None
        return "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")


class _Score:
    """Orbax's metric function: `best_metric` of a step's metrics, missing or NaN counted as the worst value."""

    def __init__(self, name: str, mode: str):
        self.name, self.worst = name, math.inf if mode == "min" else -math.inf

    def __call__(self, metrics) -> float:
        value = (metrics or {}).get(self.name)
        return float(value) if value is not None and math.isfinite(value) else self.worst


def _set_aside_unlistable(directory: pathlib.Path) -> None:
    """Rename committed step dirs whose Orbax metadata file is unreadable to `<step>.unreadable`.

    Orbax's CheckpointManager reads every step's `_CHECKPOINT_METADATA` when it opens a directory and fails outright
    on a truncated one, which would make every older good checkpoint unreachable. Renaming (never deleting) takes the
    broken step out of the listing so restore falls back to the previous one; the files stay for inspection.
    """
    if not directory.is_dir():
        return
    for step_dir in directory.iterdir():
        meta = step_dir / "_CHECKPOINT_METADATA"
        if not (step_dir.name.isdigit() and meta.exists()):
            continue
        try:
            json.loads(meta.read_text())
        except (OSError, ValueError) as e:
            target = step_dir.with_name(f"{step_dir.name}.unreadable")
            step_dir.rename(target)
            log.warning("checkpoint step %s in %s is unreadable (%s); moved it to %s, falling back to an earlier step",
                        step_dir.name, directory, _brief(e), target.name)


def _stored_shape(x) -> tuple[int, ...]:
    """The shape Orbax stores for a target leaf: typed PRNG keys are stored as their key data."""
    if jnp.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
        return jax.eval_shape(jax.random.key_data, x).shape
    return np.shape(x)


def _jsonable(extra: dict) -> dict:
    """`extra` as plain JSON types (NumPy scalars and arrays become numbers and lists), failing here, not async."""
    def default(x):
        if hasattr(x, "__array__"):  # NumPy and JAX scalars and arrays
            return np.asarray(x).tolist()
        raise TypeError(f"{type(x).__name__} is not JSON-serializable")
    try:
        return json.loads(json.dumps(extra, default=default))
    except TypeError as e:
        raise TypeError(f"checkpoint `extra` must hold JSON types: {e}") from None


def _brief(e: BaseException) -> str:
    """One line for an exception, whatever its message."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    return f"{type(e).__name__}: {text[:200]}"
