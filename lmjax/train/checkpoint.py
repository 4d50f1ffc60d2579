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

Failures are one line each. A broken step costs one warning naming the file that was bad and the step used instead;
a disk that is full, read-only or not writable is a `CheckpointError` naming the directory. Orbax and TensorStore
report the same failure many times over from their asynchronous threads (absl log records, asyncio's "exception was
never retrieved", TensorStore callbacks into closed event loops): those reports are dropped unless `LMJAX_DEBUG=1`.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import math
import os
import pathlib
import re
import shutil
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

log = logging.getLogger(__name__)


def debug_enabled() -> bool:
    """`LMJAX_DEBUG=1` (or `lmjax --debug`): let library diagnostics and tracebacks through."""
    return os.environ.get("LMJAX_DEBUG", "").lower() in ("1", "true", "yes")


class _LibraryNoise(logging.Filter):
    """Drops Orbax's absl records (each failure of an async save or restore is logged from several threads, and
    every save without metrics warns: saves between evaluations have none by design) and asyncio's "exception was
    never retrieved" reports of the same failures. Errors reach the caller as exceptions; LMJAX_DEBUG=1 keeps all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "did not provide metrics" in record.getMessage():
            return False
        if debug_enabled():
            return True
        if record.name == "asyncio":
            return "never retrieved" not in record.getMessage()
        return "orbax" not in (record.pathname or "")


def _is_library_noise(exc: BaseException | None, obj=None) -> bool:
    """An exception Orbax's or TensorStore's background machinery reports after the failure was already raised."""
    if isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc):
        return True  # TensorStore reads still in flight calling back into the loop of a failed restore
    tb = getattr(exc, "__traceback__", None)
    while tb is not None:
        if re.search(r"[/\\](orbax|tensorstore)[/\\]", tb.tb_frame.f_code.co_filename):
            return True
        tb = tb.tb_next
    return "orbax" in repr(obj)


def _quiet_unraisable(previous):
    def hook(unraisable):
        if debug_enabled() or not _is_library_noise(unraisable.exc_value, unraisable.object):
            previous(unraisable)
    hook.lmjax_quiet = True
    return hook


for _name in ("absl", "asyncio"):
    logging.getLogger(_name).addFilter(_LibraryNoise())
if not getattr(sys.unraisablehook, "lmjax_quiet", False):
    sys.unraisablehook = _quiet_unraisable(sys.unraisablehook)


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot give what was asked of it; the message names the fix."""


# errno -> what it means for a run directory and how to fix it
_STORAGE_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free space there or set train.workdir to a disk with room"),
    errno.EDQUOT: ("disk quota exceeded", "free space there or set train.workdir to a disk with room"),
    errno.EFBIG: ("a file outgrew the file size limit (ulimit -f) or the file system's",
                  "raise the limit or set train.workdir to another file system"),
    errno.EROFS: ("the file system is read-only", "set train.workdir to a writable directory"),
    errno.EACCES: ("permission denied", "make it writable or set train.workdir to a writable directory"),
    errno.EPERM: ("operation not permitted", "make it writable or set train.workdir to a writable directory"),
}
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)")


def storage_error(e: BaseException) -> tuple[str, str, str | None] | None:
    """(what, fix, path) when `e` or an exception it came from is a full, read-only or unwritable disk, else None.

    Python raises OSError with an errno; TensorStore raises ValueError naming the errno as `os_error_code`."""
    for cause in _chain(e):
        code = getattr(cause, "errno", None) if isinstance(cause, OSError) else None
        if code is None:
            match = _TENSORSTORE_ERRNO.search(str(cause))
            code = int(match.group(1)) if match else None
        if code in _STORAGE_ERRORS:
            path = getattr(cause, "filename", None)
            if path is None:
                paths = re.findall(r'local file "([^"]+)"|Failed writing: "([^"]+)"', str(cause))
                path = next((a or b for a, b in reversed(paths)), None)
            return (*_STORAGE_ERRORS[code], None if path is None else str(path))
    return None


class Checkpointer:
    """Saves and restores `(state, extra)` pairs by step under `directory`; all processes of a job call every method.

    `state` is a pytree of (possibly sharded) jax.Arrays, `extra` a small JSON-able dict saved beside it. `metrics`
    given to `save` rank checkpoints when they contain `best_metric` (`best_mode` "min" or "max"); `best_metric=None`
    keeps only the last `keep`. `cleanup_tmp=True` deletes uncommitted `*.orbax-checkpoint-tmp` directories left by
    a killed save when the directory is opened: only for the directory's single writer (`lmjax.train.lock`), never
    for a reader that may run beside a training run still saving.
    """

    def __init__(self, directory, *, keep: int = 3, best_metric: str | None = "eval_loss", best_mode: str = "min",
                 async_save: bool = True, cleanup_tmp: bool = False):
        if keep < 1:
            raise ValueError(f"keep={keep} must be at least 1 (the latest checkpoint is needed to resume)")
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode={best_mode!r} is unknown: use 'min' or 'max'")
        self.directory = pathlib.Path(directory).expanduser().absolute()
        self._best_metric = best_metric
        self._unreadable: set[int] = set()  # steps restore() found broken: the next save over them replaces them
        self.set_aside: dict[int, str] = {}  # steps whose metadata Orbax cannot list, renamed: step -> why
        self._saving: int | None = None  # the step of the save in flight, for errors that surface later
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
        try:
            if jax.process_index() == 0:
                if cleanup_tmp:
                    _remove_uncommitted(self.directory)
                self.set_aside = _set_aside_unlistable(self.directory)
            self._mgr = ocp.CheckpointManager(self.directory, options=options)
        except Exception as e:  # noqa: BLE001 - mapped to one line when it is the disk, re-raised otherwise
            self._raise_storage(e, "open the checkpoint directory")
            raise

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
        try:
            self._mgr.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(_to_tree(state)), extra=ocp.args.JsonSave(extra)),
                metrics={k: float(v) for k, v in metrics.items()} if scored else None,
                force=True,  # the caller decides when to save; Orbax's own interval policy must not skip any
            )
        except Exception as e:  # noqa: BLE001 - the previous save's failure surfaces here too
            self._raise_storage(e, f"save checkpoint step {self._saving if self._saving is not None else step}")
            raise
        self._saving = step

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
        broken = dict(self.set_aside)  # step -> why, newest first in messages
        if not steps:
            if broken:
                raise CheckpointError(f"no checkpoint in {self.directory} is readable ({_why(broken)}): move the "
                                      "broken step directories aside or train into a fresh directory")
            raise CheckpointError(f"no checkpoint in {self.directory}: train first, or point to the run's "
                                  "checkpoint directory")
        if step is not None and step not in steps:
            raise CheckpointError(f"no checkpoint for step {step} in {self.directory}: pick one of {steps}")
        candidates = [step] if step is not None else steps[::-1]
        error = None
        for s in candidates:
            try:
                out = self._mgr.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(_to_tree(target)),
                                                                   extra=ocp.args.JsonRestore()))
            except Exception as e:  # noqa: BLE001 - a broken step raises anything from KeyError to tensorstore errors
                error = e
                mismatch = self._mismatch(s, target)
                if mismatch:
                    raise CheckpointError(f"checkpoint step {s} in {self.directory} does not fit the model "
                                          f"({mismatch}): restore with the config that saved it (in extra['config']) "
                                          "or train into a fresh directory") from e
                why = _describe(e, self.directory / str(s))
                if step is not None:
                    raise CheckpointError(f"checkpoint step {s} in {self.directory} is unreadable ({why}): "
                                          f"restore another of {steps}") from e
                self._unreadable.add(s)
                broken[s] = why
                continue
            if broken:
                newer = any(b > s for b in broken)
                log.warning("checkpoint %s in %s %s unreadable (%s); %s", _steps_word(broken), self.directory,
                            "is" if len(broken) == 1 else "are", _why(broken),
                            f"falling back to step {s}" if newer else f"using step {s}")
            return s, _from_tree(target, out.state), dict(out.extra)
        raise CheckpointError(f"no checkpoint in {self.directory} is readable ({_why(broken)}): "
                              "move the broken step directories aside or train into a fresh directory") from error

    def wait(self) -> None:
        """Blocks until pending async saves have committed (and old steps are deleted)."""
        try:
            self._mgr.wait_until_finished()
        except Exception as e:  # noqa: BLE001 - the async save's failure surfaces here
            self._raise_storage(e, f"save checkpoint step {self._saving}")
            raise
        self._saving = None

    def close(self) -> None:
        """Waits for pending saves and releases Orbax's threads."""
        try:
            self._mgr.close()
        except Exception as e:  # noqa: BLE001
            self._raise_storage(e, f"save checkpoint step {self._saving}")
            raise
        self._saving = None

    def _raise_storage(self, e: BaseException, doing: str) -> None:
        """Raise a one-line CheckpointError if `e` is a full, read-only or unwritable disk; else return."""
        found = storage_error(e)
        if found is not None:
            what, fix, _ = found
            raise CheckpointError(f"cannot {doing} in {self.directory}: {what}; {fix}") from e

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
        wanted = ocp.tree.to_flat_dict(_to_tree(target))
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


def _set_aside_unlistable(directory: pathlib.Path) -> dict[int, str]:
    """Rename committed step dirs whose Orbax metadata file is unreadable to `<step>.unreadable`; returns
    {step: why} for them. A step whose only broken file is its metrics is kept, with the file renamed.

    Orbax's CheckpointManager reads every step's `_CHECKPOINT_METADATA` and `metrics/metrics` when it opens a
    directory and fails outright on a broken one, which would make every older good checkpoint unreachable.
    Renaming (never deleting) takes the broken step out of the listing so restore falls back to the previous one;
    the files stay for inspection. The warning is restore()'s, which knows the step it falls back to.
    """
    aside: dict[int, str] = {}
    if not directory.is_dir():
        return aside
    for step_dir in directory.iterdir():
        if not step_dir.name.isdigit():
            continue
        metrics = step_dir / "metrics" / "metrics"
        if metrics.exists() and _json_error(metrics):
            target = _free_name(metrics.with_name("metrics.unreadable"))
            metrics.rename(target)
            log.warning("the metrics of checkpoint step %s in %s are unreadable (%s); moved them to %s, so this "
                        "step no longer competes for the best checkpoint", step_dir.name, directory,
                        _json_error(target), target.relative_to(directory))
        meta = step_dir / "_CHECKPOINT_METADATA"
        why = _json_error(meta) if meta.exists() else None
        if why:
            target = _free_name(step_dir.with_name(f"{step_dir.name}.unreadable"))
            step_dir.rename(target)
            aside[int(step_dir.name)] = f"{meta.name}: {why}; moved to {target.name}"
    return aside


def _remove_uncommitted(directory: pathlib.Path) -> None:
    """Delete the temporary directories of saves that never committed (Orbax's own clean-up runs asynchronously)."""
    if directory.is_dir():
        for path in directory.iterdir():
            if path.is_dir() and ".orbax-checkpoint-tmp" in path.name:
                shutil.rmtree(path)


def _json_error(path: pathlib.Path) -> str | None:
    """Why `path` is not a JSON file, or None if it is."""
    try:
        json.loads(path.read_text())
        return None
    except (OSError, ValueError) as e:
        return _brief(e)


def _free_name(path: pathlib.Path) -> pathlib.Path:
    """`path`, or `path.1`, `path.2`, ... if it is taken (a step set aside twice)."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _chain(e: BaseException | None):
    """`e` and the exceptions it was raised from or during, outermost first."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _describe(e: BaseException, step_dir: pathlib.Path) -> str:
    """`FILE: reason` for a failed restore of `step_dir`. The reason is the innermost error of the chain (Orbax wraps
    TensorStore's message in one that prints a bound method); the file is the deepest one under `step_dir` that the
    errors name, else the first JSON file of the step that does not parse, else the first file a step needs that is
    missing, else the directory (an OCDBT database) the errors name."""
    chain = list(_chain(e))
    inner = chain[-1]
    text = " ".join(str(c) for c in chain)
    named = {pathlib.Path(m.rstrip("/")) for m in re.findall(r"(/[^\s\\\"':,\[\]]+)", text)}
    named = [p for p in named if step_dir in p.parents]
    files = [p for p in named if not p.is_dir()]
    culprit = max(files, key=lambda p: len(p.parts), default=None)
    if culprit is None:
        culprit = next((f for f in sorted(step_dir.rglob("*")) if _is_json_file(f) and _json_error(f)), None)
    if culprit is None:
        culprit = next((step_dir / f for f in _STEP_FILES if not (step_dir / f).exists()), None)
    if culprit is None:
        culprit = max(named, key=lambda p: len(p.parts), default=None)
    message = re.split(r" \[tensorstore_spec", (str(inner).strip().splitlines() or [""])[0])[0]
    if culprit is None:
        return _brief(inner)
    if not culprit.exists():
        reason = "missing"
    elif _is_json_file(culprit) and _json_error(culprit):
        reason = _json_error(culprit)
    else:
        tail = message.rsplit(str(culprit), 1)  # TensorStore: '... Error reading local file "<culprit>": what'
        text = tail[1].lstrip('"/: ') if len(tail) == 2 and tail[1].strip('"/: ') else message
        reason = f"{type(inner).__name__}: {text[:200]}"
    where = culprit.relative_to(step_dir).as_posix() + ("/" if culprit.is_dir() else "")
    return f"{where}: {reason}"


def _is_json_file(f: pathlib.Path) -> bool:
    """The JSON files of a step in Orbax's layout."""
    return f.is_file() and (f.name in ("_CHECKPOINT_METADATA", "_METADATA", "_sharding", "metadata", "metrics")
                            or f.parent.name == "array_metadatas")


# Files every step of this Checkpointer's layout needs (for naming one that was deleted).
_STEP_FILES = ("_CHECKPOINT_METADATA", "extra/metadata", "state/_METADATA", "state/manifest.ocdbt")


def _why(broken: dict[int, str]) -> str:
    if len(broken) == 1:
        return next(iter(broken.values()))
    return "; ".join(f"step {s}: {why}" for s, why in sorted(broken.items(), reverse=True))


def _steps_word(broken: dict[int, str]) -> str:
    steps = sorted(broken, reverse=True)
    return f"step {steps[0]}" if len(steps) == 1 else "steps " + ", ".join(map(str, steps))


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
    """One line for an exception, whatever its message (TensorStore's spec dumps and context chains cut off)."""
    lines = str(e).strip().splitlines()
    text = re.split(r" \[tensorstore_spec", lines[0] if lines else "")[0]
    return f"{type(e).__name__}: {text[:200]}"


def _to_tree(state):
    """A dataclass state (`TrainState`) as a dict of its fields that are not None: a checkpoint holds what the state
    holds, so the state of a stateless task (carry None) saves, and checkpoints from before the carry existed
    restore, without a `carry` entry. Other pytrees pass through."""
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return {f.name: getattr(state, f.name) for f in dataclasses.fields(state) if getattr(state, f.name) is not None}
    return state


def _from_tree(target, tree):
    """The restored dict back in the target's dataclass (fields it lacks stay None)."""
    if dataclasses.is_dataclass(target) and not isinstance(target, type):
        return dataclasses.replace(target, **tree)
    return tree
