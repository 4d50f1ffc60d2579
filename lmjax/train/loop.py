"""The training loop every model family runs: resume, train with a progress bar, evaluate, checkpoint, plot, sample.

Steps are grouped into jit calls of up to `train.steps_per_call` steps that never cross an eval, checkpoint or log
boundary, so an interrupted and resumed run executes exactly the same compiled programs on exactly the same batches
(the data position is saved with every checkpoint and step RNG keys are `fold_in(seed_key, step)`): its losses are
bit-identical to an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import numpy as np

from lmjax.config import ConfigError, RunConfig, to_dict, validate
from lmjax.hardware import device_peak_flops
from lmjax.parallel import is_main_process, maybe_initialize
from lmjax.runtime import enable_compilation_cache
from lmjax.train.checkpoint import Checkpointer
from lmjax.train import interrupt
from lmjax.train.engine import Engine, best_mode
from lmjax.train.lock import WorkdirLock
from lmjax.train.metrics import RunLogger, mfu
from lmjax.train.rundir import workdir_for

__all__ = ["TrainResult", "train", "workdir_for"]


@dataclasses.dataclass
class TrainResult:
    workdir: pathlib.Path
    step: int
    train_loss: float
    eval_loss: float | None
    tokens_per_s: float
    mfu: float
    wall_s: float
    sample: str | None
    state: object = dataclasses.field(repr=False, default=None)
    losses: list[tuple[int, float]] = dataclasses.field(repr=False, default_factory=list)
    eval_metrics: dict = dataclasses.field(default_factory=dict)  # everything the last evaluation reported
    engine: object = dataclasses.field(repr=False, default=None)

    def summary(self) -> dict:
        return {"step": self.step, "train_loss": self.train_loss, "eval_loss": self.eval_loss,
                "tokens_per_s": self.tokens_per_s, "mfu": self.mfu, "wall_s": self.wall_s, **self.eval_metrics}


def _next_boundary(step: int, cfg: RunConfig) -> int:
    """The next step at which the loop must stop to log, evaluate or checkpoint."""
    t = cfg.train
    marks = [t.steps]
    for every in (t.log_every, t.eval_every, t.checkpoint_every):
        if every > 0:
            marks.append((step // every + 1) * every)
    return min(min(marks), step + t.steps_per_call)


def train(cfg: RunConfig, *, engine: Engine | None = None, stop_after: int | None = None) -> TrainResult:
    """Train `cfg` to `cfg.train.steps` (or stop early after `stop_after` steps of this process, for tests).

    The run holds its workdir's lock throughout (`lmjax.train.lock`: a second run there fails at once). SIGINT or
    SIGTERM stops it after the current compiled call with a checkpoint of the last completed step, raising
    `lmjax.train.interrupt.Interrupted`; before the first step a signal raises it at once, having saved nothing."""
    validate(cfg)  # a config built in code has not been through get_preset's check
    maybe_initialize()
    with interrupt.signals() as stop, WorkdirLock(workdir_for(cfg), enabled=is_main_process()):
        return _train(cfg, engine, stop_after, stop)


def _train(cfg: RunConfig, engine: Engine | None, stop_after: int | None, stop: interrupt.Stop) -> TrainResult:
    enable_compilation_cache()
    start_wall = time.perf_counter()
    engine = engine or Engine(cfg)
    main = is_main_process()
    workdir = workdir_for(cfg)
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints,
                        best_metric=cfg.train.best_metric or None, best_mode=best_mode(cfg),
                        cleanup_tmp=True)  # the lock makes this process the directory's only writer
    data_iter = engine.data.train(jax.process_index(), jax.process_count())

    step = 0
    state = None
    prior_wall = 0.0
    if cfg.train.resume and (ckpt.latest_step() is not None or ckpt.set_aside):  # none readable: restore says so
        step, state, extra = ckpt.restore(engine.abstract_state())
        data_iter.restore(extra["data"])
        prior_wall = float(extra.get("wall_s", 0.0))  # the run's earlier invocations (0 for checkpoints before it)
    if state is None:
        state = engine.init_state()
    stop.defer()  # a signal from here waits for the files below and the first compiled call
    if main:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(json.dumps(to_dict(cfg), indent=2))
        if engine.data.tokenizer is not None:
            engine.data.tokenizer.save(workdir / "tokenizer")

    peak = device_peak_flops("bfloat16" if cfg.train.dtype == "bfloat16" else "float32")
    tokens_per_step = cfg.data.batch_size * cfg.optim.grad_accum * engine.task.tokens_per_example
    log = RunLogger(workdir, total_steps=cfg.train.steps, initial_step=step, progress=cfg.train.progress,
                    tensorboard=cfg.train.tensorboard, is_main=main, desc=cfg.name)
    if step:
        log.write(f"resumed from step {step} in {ckpt.directory}")
    elif getattr(engine, "init_message", None):
        log.write(engine.init_message)

    losses: list[tuple[int, float]] = []
    last_metrics: dict = {}
    eval_loss, eval_metrics = None, {}
    timed_tokens, timed_s, first_call = 0, 0.0, True
    window_t, window_tokens = time.perf_counter(), 0
    limit = cfg.train.steps if stop_after is None else min(cfg.train.steps, step + stop_after)
    pending: list[tuple[int, dict]] = []  # device metrics of calls since the last log; fetched together (no sync)
    stop.defer()  # raises for a signal that came since; from here one is checked after each compiled call
    while step < limit:
        k = min(_next_boundary(step, cfg), limit) - step
        host = engine.stack_batches(data_iter, k)
        state, metrics = engine.train_steps(state, host)
        pending.append((step, metrics))
        step += k
        log.advance(k)
        window_tokens += k * tokens_per_step
        if step % cfg.train.log_every == 0 or step == limit:
            fetched, pending = jax.device_get(pending), []
            if engine.task.count_tokens:  # the real tokens of these batches, whatever their rows
                window_tokens = sum(float(np.sum(m["count"])) for _, m in fetched)
            for start, m in fetched:
                losses += [(start + i + 1, float(v)) for i, v in enumerate(m["loss"])]
            metrics = fetched[-1][1]
            now = time.perf_counter()
            if first_call:  # the first call includes compilation: keep it out of tokens/s
                first_call = False
            else:
                timed_tokens += window_tokens
                timed_s += now - window_t
            tok_s = window_tokens / max(now - window_t, 1e-9)
            last_metrics = {k: float(v[-1]) for k, v in metrics.items() if k != "count"}
            last_metrics |= {"tokens_per_s": tok_s, "mfu": mfu(engine.task.flops_per_token, tok_s, peak,
                                                               jax.device_count())}
            if not np.isfinite(last_metrics["loss"]):
                raise FloatingPointError(f"loss became {last_metrics['loss']} at step {step}: lower optim.lr or "
                                         "check the data")
            last_metrics["wall_s"] = prior_wall + now - start_wall  # across resumes: the run's time so far
            log.log(step, last_metrics)
            window_t, window_tokens = time.perf_counter(), 0
        evaluated = {}
        if cfg.train.eval_every and (step % cfg.train.eval_every == 0 or step == cfg.train.steps):
            evaluated = engine.evaluate(state.params)
            if evaluated:
                eval_loss, eval_metrics = evaluated["eval_loss"], evaluated
                log.log(step, evaluated, split="eval")
                if cfg.train.best_metric and cfg.train.best_metric not in evaluated:
                    raise ConfigError(f"train.best_metric={cfg.train.best_metric!r} is not among the evaluation's "
                                      f"metrics ({', '.join(evaluated)}): pick one of them, or '' for none")
            window_t = time.perf_counter()  # eval time is not training time
        if (cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0) or step == limit or stop.requested:
            ckpt.save(step, state, extra={"data": data_iter.state(), "config": to_dict(cfg),
                                          "wall_s": prior_wall + time.perf_counter() - start_wall},
                      metrics=evaluated or None, force=True)
        if stop.requested:  # keep every completed step: the save above commits before the run stops
            ckpt.close()
            log.close(plot=False)
            raise stop.interrupted(step=step, saved_in=ckpt.directory)
    if eval_loss is None and engine.data.eval is not None:  # e.g. resumed a finished run: report where it stands
        eval_metrics = engine.evaluate(state.params)
        eval_loss = eval_metrics.get("eval_loss")
    ckpt.wait()
    ckpt.close()
    plot_path = log.close(plot=cfg.train.plot)

    sample = None
    if cfg.train.sample_tokens and engine.task.sample_fn is not None and engine.data.tokenizer is not None:
        sample = engine.task.sample_fn(state.params, engine.data.tokenizer, cfg.train.sample_prompt,
                                       cfg.train.sample_tokens, jax.random.PRNGKey(cfg.train.seed))
    tokens_per_s = timed_tokens / timed_s if timed_s else 0.0
    result = TrainResult(
        workdir=workdir, step=step, train_loss=last_metrics.get("loss", float("nan")), eval_loss=eval_loss,
        tokens_per_s=tokens_per_s, mfu=mfu(engine.task.flops_per_token, tokens_per_s, peak, jax.device_count()),
        wall_s=time.perf_counter() - start_wall, sample=sample, state=state, losses=losses,
        eval_metrics=eval_metrics, engine=engine,
    )
    if main:
        summary = workdir / "summary.json"
        if result.losses or not summary.exists():  # a resumed finished run keeps the summary of the run that trained
            summary.write_text(json.dumps({**result.summary(), "plot": str(plot_path)}, indent=2))
    return result
