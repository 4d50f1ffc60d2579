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
import math
import re
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
    ("segments", None),  # segment (token-type) embedding rows
    ("layers", None),
    ("classes", None),
    ("chars", None),  # character-embedding rows (ELMo's token encoder)
    ("filters", None),  # convolution filters and the highway width over them
)


@dataclass(frozen=True)
class MeshConfig:
    """Device mesh. `data=-1` takes all devices left after fsdp and tensor."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    rules: tuple[tuple[str, Any], ...] = DEFAULT_RULES


OPTIMIZERS = ("adamw", "sgd", "adagrad")
SCHEDULES = ("cosine", "linear", "inverse_sqrt", "constant", "step")
LOSS_NORMS = ("token", "sequence")  # what the summed loss's gradient is divided by


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adamw"  # adamw | sgd | adagrad
    lr: float = 1e-3
    end_lr: float = 0.0  # final learning rate of the decay (cosine / linear)
    schedule: str = "cosine"  # cosine | linear | inverse_sqrt | constant | step
    warmup_steps: int = 0
    decay_start: int = 0  # step schedule: steps at the full lr before the first decay
    decay_every: int = 0  # step schedule: lr *= decay_rate every decay_every steps from decay_start on
    decay_rate: float = 1.0  # step schedule
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-8
    momentum: float = 0.0  # sgd only
    clip_norm: float = 1.0  # <= 0 disables global-norm clipping
    grad_accum: int = 1  # micro-batches per optimizer step
    freeze: tuple[str, ...] = ()  # regexes over '/'-joined parameter paths; matches get zero updates
    decay_mask: str = "ndim>=2"  # which parameters get weight decay: "ndim>=2" or "all"
    loss_norm: str = "token"  # gradient of the loss summed over the batch, divided by: "token" count | "sequence" count


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "tiny_shakespeare"
    tokenizer: str = "char"  # char | word | wordpiece | bpe
    tokenizer_dir: str = ""  # load this saved tokenizer (e.g. runs/gpt_imdb/tokenizer) instead of fitting one
    vocab_size: int = 0  # for trained tokenizers (word/wordpiece/bpe); 0 = tokenizer default
    min_freq: int = 1  # word tokenizer frequency cut-off
    seq_len: int = 256
    batch_size: int = 64  # global batch (all devices, all hosts), per micro-batch
    eval_batch_size: int = 0  # global batch of evaluation; 0 = batch_size
    max_examples: int = 0  # use only the first N training examples of an example-based task (0 = all)
    max_tokens: int = 0  # sentence-pair tasks batched by tokens: positions per batch side (fairseq's --max-tokens)
    src_lang: str = "de"  # sentence-pair tasks: the source and target fields of the dataset
    tgt_lang: str = "en"
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
    best_metric: str = "eval_loss"  # any metric evaluation reports (eval_loss, eval_accuracy, ...); "" keeps none
    best_mode: str = "auto"  # min | max | auto (max for accuracy, f1, bleu and the like; min otherwise)
    seed: int = 0
    workdir: str = "runs/{name}"
    dtype: str = "float32"  # compute dtype: float32 | bfloat16 (params, norms, softmax, loss stay fp32)
    steps_per_call: int = 1  # optimizer steps fused into one jit call with lax.scan
    sample_tokens: int = 300  # tokens generated at the end of a run (0 = none)
    sample_prompt: str = "\n"
    progress: bool = True
    resume: bool = True
    init_from: str = ""  # a run directory (or its checkpoints/ dir) whose latest parameters start a fresh run
    init_source: str = ""  # '/'-path of the subtree of those parameters to load ("" = all of them)
    init_target: str = ""  # '/'-path in this model's parameters where that subtree goes ("" = the root)
    tensorboard: bool = True
    plot: bool = True


@dataclass(frozen=True)
class RunConfig:
    name: str
    model: Any  # a model family's frozen config dataclass, with a class attribute `family`
    task: str = "lm"  # a task the family registered (`lmjax presets` lists them): lm, classify, tbptt, translate
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
PRESET_MODULES: tuple[str, ...] = ("lmjax.models.gpt", "lmjax.models.rnn", "lmjax.models.nnlm", "lmjax.models.seq2seq",
                                   "lmjax.models.transformer", "lmjax.models.bert", "lmjax.models.elmo",
                                   "lmjax.models.transfer")


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
    if isinstance(cfg, RunConfig):
        validate(cfg)
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


# ---------------------------------------------------------------------------------------------------- validation

DTYPES = ("float32", "bfloat16")  # train.dtype: the matmuls' compute dtype
TOKENIZERS = ("char", "word", "wordpiece", "bpe")
DECAY_MASKS = ("ndim>=2", "all")
BEST_MODES = ("min", "max", "auto")


def check_ranges(section: str, node: Any, checks: typing.Iterable[tuple[str, bool, str]]) -> None:
    """Raise a one-line ConfigError for the first (key, ok, allowed) check of `node` that fails; model config classes
    call it from their `validate()`."""
    for key, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{section}.{key}={getattr(node, key)!r} is invalid: it must be {allowed}")


def _in(choices: typing.Sequence) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), f"one of {', '.join(map(str, choices))}"


def _at_least(low: float, note: str = "") -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low}{note}"


def _unit(*, open_low: bool = False, closed_high: bool = False) -> tuple[Callable[[Any], bool], str]:
    """[0, 1) by default; (0, 1] with open_low and closed_high."""
    return ((lambda v: (0 < v if open_low else 0 <= v) and (v <= 1 if closed_high else v < 1)),
            f"in {'(' if open_low else '['}0, 1{']' if closed_high else ')'}")


def _shared_rules() -> dict[str, tuple[Callable[[Any], bool], str]]:
    """Allowed values of the shared sections' settings, by dotted key. Counts and sizes are >= 1, intervals >= 0
    (0 turns the thing off), rates > 0, probabilities and betas in [0, 1)."""

    positive = _at_least(1)
    off = _at_least(0, " (0 = off)")
    return {
        "data.tokenizer": _in(TOKENIZERS),
        "data.vocab_size": _at_least(0, " (0 = the tokenizer's default)"),
        "data.min_freq": positive,
        "data.seq_len": positive,
        "data.batch_size": positive,
        "data.eval_batch_size": _at_least(0, " (0 = data.batch_size)"),
        "data.max_examples": _at_least(0, " (0 = all)"),
        "data.seed": _at_least(0),
        "optim.name": _in(OPTIMIZERS),
        "optim.lr": ((lambda v: v > 0), "> 0"),
        "optim.end_lr": _at_least(0),
        "optim.schedule": _in(SCHEDULES),
        "optim.warmup_steps": _at_least(0),
        "optim.decay_start": _at_least(0),
        "optim.decay_every": off,
        "optim.decay_rate": _unit(open_low=True, closed_high=True),
        "optim.weight_decay": _at_least(0),
        "optim.b1": _unit(),
        "optim.b2": _unit(),
        "optim.eps": ((lambda v: v > 0), "> 0"),
        "optim.momentum": _unit(),
        "optim.grad_accum": positive,
        "optim.decay_mask": _in(DECAY_MASKS),
        "optim.loss_norm": _in(LOSS_NORMS),
        "mesh.data": ((lambda v: v == -1 or v >= 1), ">= 1, or -1 (the devices left after fsdp and tensor)"),
        "mesh.fsdp": positive,
        "mesh.tensor": positive,
        "train.steps": positive,
        "train.eval_every": off,
        "train.eval_batches": _at_least(0, " (0 = the whole split)"),
        "train.log_every": positive,
        "train.checkpoint_every": _at_least(0, " (0 = only at the end)"),
        "train.keep_checkpoints": positive,
        "train.best_mode": _in(BEST_MODES),
        "train.seed": _at_least(0),
        "train.dtype": _in(DTYPES),
        "train.steps_per_call": positive,
        "train.sample_tokens": _at_least(0, " (0 = no sample)"),
    }


def _leaves(node: Any, prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, value


def validate(cfg: RunConfig) -> RunConfig:
    """Check every setting of `cfg`; the first bad one is a one-line `ConfigError` naming the key and what it allows.

    Run at the end of `apply_overrides` (so by `get_preset`, `lmjax config` and `lmjax train` alike) and by the
    training loop. Every float anywhere in the tree must be finite; the shared sections follow `_shared_rules`;
    the model section is checked by its config class's `validate(self)` when it has one. What needs the data
    (vocabulary sizes, divisibility by the mesh) is checked when the model and the mesh are built.
    """
    for key, value in _leaves(cfg):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} must be a finite number")
    values = dict(_leaves(cfg))
    for key, (ok, allowed) in _shared_rules().items():
        if key in values and not ok(values[key]):
            raise ConfigError(f"{key}={values[key]!r} is invalid: it must be {allowed}")
    o = cfg.optim
    if o.schedule == "step" and o.decay_every < 1:
        raise ConfigError(f"optim.decay_every={o.decay_every} must be >= 1 with optim.schedule=step (the steps "
                          "between two decays)")
    for pattern in o.freeze:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"optim.freeze pattern {pattern!r} is not a valid regex ({e}): fix the pattern") from None
    check = getattr(cfg.model, "validate", None)
    if callable(check):
        check()
    return cfg
