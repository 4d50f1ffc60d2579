"""A run's directory: where it lives, and the tokenizer a run must reuse.

    runs/<name>/            train.workdir, "{name}" filled in
        checkpoints/<step>/ Orbax steps (lmjax.train.checkpoint)
        tokenizer/          the tokenizer the run trained with
        config.json, metrics.jsonl, summary.json, tb/, loss.png
"""

from __future__ import annotations

import pathlib

from lmjax.config import RunConfig


def workdir_for(cfg: RunConfig) -> pathlib.Path:
    return pathlib.Path(cfg.train.workdir.format(name=cfg.name)).expanduser()


def has_checkpoint(checkpoints: pathlib.Path) -> bool:
    return checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())


def init_run_dir(cfg: RunConfig) -> pathlib.Path | None:
    """The run directory of `train.init_from` (given as the run directory or its checkpoints/ directory)."""
    if not cfg.train.init_from:
        return None
    path = pathlib.Path(cfg.train.init_from).expanduser()
    return path.parent if path.name == "checkpoints" else path


def saved_tokenizer(cfg: RunConfig):
    """The tokenizer a run must use instead of fitting one, or None: its own, saved in its workdir, when it will
    resume from a checkpoint there (and for `lmjax eval`); else that of the run in `train.init_from`, whose
    parameters it starts from; else `data.tokenizer_dir`'s. Fitting again is not guaranteed to give the same ids: HF's WordPiece trainer assigns
    tied pieces in varying order."""
    from lmjax.data import load_tokenizer
    from lmjax.data.tokenizers import TOKENIZER_FILE

    workdir = workdir_for(cfg)
    if cfg.train.resume and (workdir / "tokenizer" / TOKENIZER_FILE).is_file() and has_checkpoint(
            workdir / "checkpoints"):
        return load_tokenizer(workdir / "tokenizer")
    source = init_run_dir(cfg)
    if source is not None and (source / "tokenizer" / TOKENIZER_FILE).is_file():
        return load_tokenizer(source / "tokenizer")
    if cfg.data.tokenizer_dir:
        return load_tokenizer(pathlib.Path(cfg.data.tokenizer_dir).expanduser())
    return None
