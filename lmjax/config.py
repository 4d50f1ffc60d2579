"""Typed, frozen run configuration, the preset registry and `--set key=value` overrides.

A run is described by one `RunConfig`: the model family's own frozen dataclass plus the shared sections
(data, optimizer, mesh, training). Presets are named functions that return a `RunConfig`; model files register
theirs with `@register_preset`. Overrides are dotted paths into the dataclass tree (`model.n_layer=6`,
`optim.lr=3e-4`), parsed by the field's declared type, and any unknown key or bad value is a `ConfigError` that
names the valid keys.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says how."""


# Logical axis name -> mesh axis (or axes, or None for replicated). Layers name their parameter and activation axes
# with these logical names only; this table is the single place that maps them onto the device mesh.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv", None),
    ("qkv", None),
    ("vocab", "tensor"),
    ("hidden", "tensor"),  # recurrent state / gate units
    ("gates", None),
    ("positions", None),
    ("layers", None),
    ("classes", None),
)


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh. `data=-1` takes all devices left after fsdp and tensor."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: tuple[tuple[str, Any], ...] = DEFAULT_RULES


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"  # adamw | sgd | adagrad
    lr: float = 1e-3
    end_lr: float = 0.0  # final learning rate of the decay (cosine / linear)
    schedule: str = "cosine"  # cosine | linear | inverse_sqrt | constant
    warmup_steps: int = 0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    clip_norm: float = 1.0  # <= 0 disables global-norm clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    freeze: tuple[str, ...] = ()  # regexes over '/'-joined parameter paths; matches get zero updates
    decay_mask: str = "ndim>=2"  # which parameters get weight decay: "ndim>=2" or "all"


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "tiny_shakespeare"
    tokenizer: str = "char"  # char | word | wordpiece | bpe
    vocab_size: int = 0  # for trained tokenizers (word/wordpiece/bpe); 0 = tokenizer default
    min_freq: int = 1  # word tokenizer frequency cut-off
    seq_len: int = 256
    batch_size: int = 64  # global batch (all devices, all hosts), per micro-batch
    data_dir: str = ""  # local data directory; "" = $LMJAX_DATA_DIR or the package's embedded default
    seed: int = 0


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 5000
    eval_every: int = 500
    eval_batches: int = 20
    log_every: int = 10
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    best_metric: str = "eval_loss"  # "" keeps no best checkpoint
    seed: int = 0
    workdir: str = "runs/{name}"
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (params, norms, softmax, loss stay fp32)
    steps_per_call: int = 1  # optimizer steps fused into one jit call with lax.scan
    sample_tokens: int = 300  # tokens generated at the end of a run (0 = none)
    sample_prompt: str = "\n"
    progress: bool = True
    resume: bool = True
    tensorboard: bool = True
    plot: bool = True


@dataclass(frozen=True)
class RunConfig:
    name: str
    model: Any  # a model family's frozen config dataclass, with a class attribute `family`
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""

    @property
    def family(self) -> str:
        return type(self.model).family


def with_vocab_size(model_cfg: Any, vocab_size: int) -> Any:
    """`model_cfg` with `vocab_size` taken from the tokenizer when it is 0; an explicit size must hold every id."""
    if model_cfg.vocab_size == 0:
        return dataclasses.replace(model_cfg, vocab_size=vocab_size)
    if model_cfg.vocab_size < vocab_size:
        raise ConfigError(f"model.vocab_size={model_cfg.vocab_size} is smaller than the tokenizer's {vocab_size} ids: "
                          f"set model.vocab_size=0 (take the tokenizer's) or >= {vocab_size}")
    return model_cfg


# ----------------------------------------------------------------------------------------------- preset registry

_PRESETS: dict[str, tuple[Callable[[], RunConfig], str]] = {}
# Modules that register presets when imported. Importing them lazily keeps `import lmjax.config` cheap.
PRESET_MODULES: tuple[str, ...] = ("lmjax.models.gpt", "lmjax.models.rnn", "lmjax.models.nnlm", "lmjax.models.seq2seq")


def register_preset(name: str, description: str):
    """Decorator: register `fn() -> RunConfig` under `name` with a one-line description."""

    def wrap(fn: Callable[[], RunConfig]):
        if name in _PRESETS:
            raise ValueError(f"preset {name!r} registered twice")
        _PRESETS[name] = (fn, description)
        return fn

    return wrap


def _load_presets() -> None:
    for mod in PRESET_MODULES:
        importlib.import_module(mod)


def list_presets() -> dict[str, str]:
    _load_presets()
    return {k: v[1] for k, v in sorted(_PRESETS.items())}


def get_preset(name: str, overrides: typing.Sequence[str] = ()) -> RunConfig:
    _load_presets()
    if name not in _PRESETS:
        import difflib

        close = difflib.get_close_matches(name, _PRESETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}.{hint} Run `lmjax presets` to list them: {', '.join(sorted(_PRESETS))}")
    fn, desc = _PRESETS[name]
    cfg = fn()
    if cfg.name != name:
        cfg = dataclasses.replace(cfg, name=name)
    if not cfg.description:
        cfg = dataclasses.replace(cfg, description=desc)
    return apply_overrides(cfg, overrides)


# ----------------------------------------------------------------------------------------------------- overrides


def valid_keys(cfg: Any, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a config tree."""
    keys = []
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            keys += valid_keys(v, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(text: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if text.lower() in ("none", "null") and len(args) < len(typing.get_args(tp)):
            return None
        errors = []
        for a in args:
            try:
                return _parse(text, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if tp is Any:
        return text
    if tp is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(f"{key} expects a bool (true/false), got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
            raise ConfigError(f"{key} expects an int, got {text!r}") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{key} expects a float, got {text!r}") from None
    if tp is str:
        return text
    if origin is tuple:
        args = typing.get_args(tp)
        items = [s for s in text.split(",") if s != ""] if text else []
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_parse(s.strip(), args[0], key) for s in items)
        if len(items) != len(args):
            raise ConfigError(f"{key} expects {len(args)} comma-separated values, got {text!r}")
        return tuple(_parse(s.strip(), a, key) for s, a in zip(items, args))
    raise ConfigError(f"{key} cannot be set from the command line (type {tp})")


def apply_overrides(cfg: Any, overrides: typing.Sequence[str]) -> Any:
    """Return `cfg` with each `a.b.c=value` applied; values parsed by the field's annotated type."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. optim.lr=3e-4")
        key, text = item.split("=", 1)
        cfg = _set(cfg, key.strip().split("."), text.strip(), key.strip(), cfg)
    return cfg


def _set(node: Any, path: list[str], text: str, full: str, root: Any) -> Any:
    names = {f.name: f for f in dataclasses.fields(node)}
    head = path[0]
    if head not in names:
        raise ConfigError(f"unknown config key {full!r}. Valid keys: {', '.join(valid_keys(root))}")
    cur = getattr(node, head)
    if len(path) > 1:
        if not dataclasses.is_dataclass(cur):
            raise ConfigError(f"unknown config key {full!r}. Valid keys: {', '.join(valid_keys(root))}")
        return dataclasses.replace(node, **{head: _set(cur, path[1:], text, full, root)})
    if dataclasses.is_dataclass(cur):
        raise ConfigError(f"{full!r} is a section; set one of its keys: "
                          f"{', '.join(k for k in valid_keys(root) if k.startswith(full + '.'))}")
    hints = typing.get_type_hints(type(node))
    return dataclasses.replace(node, **{head: _parse(text, hints[head], full)})


def to_dict(cfg: Any) -> dict:
    """JSON-able nested dict of a config (model family recorded under model.family)."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            d = to_dict(v)
            if hasattr(type(v), "family"):
                d["family"] = type(v).family
            out[f.name] = d
        elif isinstance(v, tuple):
            out[f.name] = [list(x) if isinstance(x, tuple) else x for x in v]
        else:
            out[f.name] = v
    return out
