"""Optax optimizers and learning-rate schedules from `OptimConfig`, with freezing by parameter-path pattern.

    update = schedule(step) * base_optimizer(clip_by_global_norm(grad))      for trainable parameters
    update = 0                                                                for parameters matching `freeze`

Freezing uses `optax.multi_transform`, so frozen parameters hold no optimizer state and do not count towards the
clipping norm. Transfer learning (frozen, partially frozen, full fine-tuning) is this one mechanism.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from lmjax.config import LOSS_NORMS, OPTIMIZERS, SCHEDULES, ConfigError, OptimConfig
from lmjax.parallel.sharding import path_str



def make_schedule(cfg: OptimConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr` over `warmup_steps`, then the named decay.

    cosine:       lr -> end_lr along half a cosine until `total_steps`
    linear:       lr -> end_lr linearly until `total_steps`
    inverse_sqrt: lr * sqrt(warmup / step) after warmup (Vaswani et al.)
    constant:     lr
    step:         lr * decay_rate^max(0, floor((step - decay_start) / decay_every) + 1) from decay_start on, lr
                  before (Zaremba et al.'s per-epoch decay with decay_every = steps per epoch)
    """
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={cfg.schedule!r} is unknown: choose one of {', '.join(SCHEDULES)}")
    warmup = max(int(cfg.warmup_steps), 0)
    decay_steps = max(total_steps - warmup, 1)
    if cfg.schedule == "cosine":
        alpha = cfg.end_lr / cfg.lr if cfg.lr else 0.0
        decay = optax.cosine_decay_schedule(cfg.lr, decay_steps, alpha=alpha)
    elif cfg.schedule == "linear":
        decay = optax.linear_schedule(cfg.lr, cfg.end_lr, decay_steps)
    elif cfg.schedule == "inverse_sqrt":
        w = max(warmup, 1)
        decay = lambda step: cfg.lr * jnp.sqrt(w / jnp.maximum(step + w, 1.0))  # noqa: E731 - step counts from warmup's end
    elif cfg.schedule == "step":
        if cfg.decay_every < 1 or not 0.0 < cfg.decay_rate <= 1.0:
            raise ConfigError(f"optim.schedule=step needs optim.decay_every >= 1 (got {cfg.decay_every}) and "
                              f"optim.decay_rate in (0, 1] (got {cfg.decay_rate})")

        def decay(step):
            # In steps after warmup; decay_start counts from step 0 of the run.
            since = jnp.asarray(step) + warmup - cfg.decay_start
            decays = jnp.where(since >= 0, since // cfg.decay_every + 1, 0)
            return cfg.lr * jnp.asarray(cfg.decay_rate, jnp.float32) ** decays.astype(jnp.float32)
    else:
        decay = optax.constant_schedule(cfg.lr)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), decay], [warmup])


def freeze_labels(params, patterns: tuple[str, ...]):
    """'frozen' for every parameter whose path matches one of the regexes (re.search), else 'trainable'."""
    try:
        compiled = [re.compile(p) for p in patterns]
    except re.error as e:
        raise ConfigError(f"optim.freeze pattern is not a valid regex ({e}): fix the pattern") from None
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if any(c.search(path_str(path)) for c in compiled) else "trainable", params
    )


def _decay_mask(cfg: OptimConfig):
    if cfg.decay_mask == "all":
        return None
    if cfg.decay_mask == "ndim>=2":  # no weight decay on biases, LayerNorm scales and other vectors
        return lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
    raise ConfigError(f"optim.decay_mask={cfg.decay_mask!r} is unknown: use 'ndim>=2' or 'all'")


def make_optimizer(cfg: OptimConfig, total_steps: int, params=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The full update rule and its schedule. `params` (or its abstract shape) is needed only when freezing."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"optim.name={cfg.name!r} is unknown: choose one of {', '.join(OPTIMIZERS)}")
    if cfg.grad_accum < 1:
        raise ConfigError(f"optim.grad_accum={cfg.grad_accum} must be >= 1")
    if cfg.loss_norm not in LOSS_NORMS:
        raise ConfigError(f"optim.loss_norm={cfg.loss_norm!r} is unknown: choose one of {', '.join(LOSS_NORMS)}")
    schedule = make_schedule(cfg, total_steps)
    if cfg.name == "adamw":
        base = optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                           mask=_decay_mask(cfg))
    elif cfg.name == "sgd":
        base = optax.sgd(schedule, momentum=cfg.momentum or None)
        if cfg.weight_decay:
            base = optax.chain(optax.add_decayed_weights(cfg.weight_decay, _decay_mask(cfg)), base)
    else:
        base = optax.adagrad(schedule, eps=cfg.eps)
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), base) if cfg.clip_norm > 0 else base
    if cfg.freeze:
        if params is None:
            raise ValueError("make_optimizer needs params to resolve optim.freeze patterns")
        labels = freeze_labels(params, cfg.freeze)
        if "trainable" not in jax.tree_util.tree_leaves(labels):
            raise ConfigError(f"optim.freeze={cfg.freeze} freezes every parameter: nothing would train")
        tx = optax.multi_transform({"trainable": tx, "frozen": optax.set_to_zero()}, labels)
    return tx, schedule
