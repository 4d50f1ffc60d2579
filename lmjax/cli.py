"""`lmjax` command line: thin wrappers that parse, build a config and call the library.

    lmjax presets                                   one line per preset
    lmjax train PRESET [--set key=value ...]        train (resumes from the run's latest checkpoint)
    lmjax eval PRESET [--set ...] [--split test]    exact loss/perplexity of the latest checkpoint
    lmjax generate PRESET [--set ...] --prompt TEXT sample from the latest checkpoint, with tokens/s
    lmjax translate PRESET [--set ...] [--beam N] [SENTENCE ...]   translate arguments or stdin lines (transformer
                                                    presets) with the best checkpoint, one line each, sentences/s
    lmjax config PRESET [--set ...]                 print the resolved config as JSON
    lmjax compile PRESET --topology v5e:2x4 [--set ...]   TPU memory/FLOPs report from the real compiler
    lmjax ngram {build,score,ppl,next,fill,compare} count-based n-gram LMs (ARPA files, KenLM-compatible)
    lmjax word2vec {train,neighbours,analogy,similarity,evaluate,plot}   word vectors (skip-gram, CBOW)
    lmjax --version

Errors a user can cause (unknown preset or key, bad value, missing data, broken checkpoint, a full or read-only disk,
a run directory another run holds) print one line naming the fix and exit with status 2, never a stack trace
(`--debug` or LMJAX_DEBUG=1 adds the traceback and the libraries' own diagnostics). SIGINT (Ctrl-C) and SIGTERM stop
`lmjax train` after the current compiled call with a checkpoint of the last completed step and one line saying how to
resume; the exit status is 130 or 143.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time

log = logging.getLogger("lmjax.cli")


def version() -> str:
    """The installed distribution's version, else the package's `__version__` (a checkout on sys.path)."""
    from importlib import metadata

    try:
        return metadata.version("lmjax")
    except metadata.PackageNotFoundError:
        import lmjax

        return lmjax.__version__


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message is the whole story: printed as one line, exit status 2."""
    from lmjax.config import ConfigError

    errors: list[type[BaseException]] = [ConfigError, FloatingPointError]  # the loop's "loss became nan: lower lr"
    try:
        from lmjax.data import DataError

        errors.append(DataError)
    except ImportError:
        pass
    from lmjax.train.checkpoint import CheckpointError
    from lmjax.train.lock import LockError

    errors += [CheckpointError, LockError]
    return tuple(errors)


def _expected_failure(e: BaseException) -> str | None:
    """The one line for an error a user can fix, or None for a bug (which keeps its traceback)."""
    if isinstance(e, _user_errors()):
        return str(e)
    from lmjax.train.checkpoint import storage_error

    found = storage_error(e)  # a full, read-only or unwritable disk, from Python or from TensorStore
    if found is not None:
        what, fix, path = found
        return f"cannot write {path or 'to the run directory'}: {what}; {fix}"
    if isinstance(e, OSError):  # the environment, not lmjax: name the file and the system's reason
        where = f" {e.filename}" if e.filename else ""
        return f"cannot access{where}: {e.strerror or e}; check the path and its permissions"
    return None


class _LogFormat(logging.Formatter):
    """lmjax's status lines as they are; warnings and errors prefixed like the CLI's own errors."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


def _setup_logging(debug: bool) -> None:
    """stderr: everyone's warnings, and on a terminal lmjax's INFO status lines (dataset preparation, tokenizer
    fitting, evaluation: nothing long is silent); with --debug, every library's INFO records, with their names.
    Status lines stay off when stderr is a file or a pipe, so that an error there is the one line it says."""
    handler = logging.StreamHandler(sys.stderr)
    if debug:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        status = sys.stderr.isatty()
        handler.setFormatter(_LogFormat())
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or (status and r.name.split(".")[0] == "lmjax"))
    root = logging.getLogger()
    for h in list(root.handlers):  # absl's import-time basicConfig handler, if it came first
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _quiet_after_failure() -> None:
    """Once a failure is reported, what background threads and exit hooks say about it is noise (an Orbax thread's
    copy of the same error, a TensorBoard writer that cannot flush to the full disk)."""
    import threading

    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None


def _config(args):
    from lmjax.config import get_preset

    cfg = get_preset(args.preset, args.set or [])
    if args.as_program and args.command in ("train", "eval", "generate", "translate") and cfg.train.dtype == "float32":
        from lmjax.runtime import use_ynn_fusion

        use_ynn_fusion()
    return cfg


def cmd_presets(args) -> int:
    from lmjax.config import list_presets

    from lmjax.config import get_preset
    from lmjax.train.task import list_tasks

    presets = list_presets()
    tasks = {name: (lambda c: f"{c.family}/{c.task}")(get_preset(name)) for name in presets}
    width, task_width = max(map(len, presets)), max(map(len, tasks.values()))
    if getattr(args, "tasks", False):  # family/task and what it trains; a run picks one with --set task=NAME
        for (family, task), spec in list_tasks().items():
            print(f"{family + '/' + task:<{task_width}}  {spec.description}")
        return 0
    for name, desc in presets.items():
        print(f"{name:<{width}}  {tasks[name]:<{task_width}}  {desc}")
    return 0


def cmd_config(args) -> int:
    from lmjax.config import to_dict

    print(json.dumps(to_dict(_config(args)), indent=2))
    return 0


def cmd_train(args) -> int:
    from lmjax.train.loop import train

    cfg = _config(args)
    result = train(cfg)
    if result.step == 0:
        return 0
    print(f"\nrun: {result.workdir}")
    if not result.losses:
        print(f"already trained to step {result.step}; --set train.resume=false starts over")
    line = f"steps {result.step}"
    if math.isfinite(result.train_loss):
        line += f"  train loss {result.train_loss:.4f}"
    if result.eval_loss is not None:
        line += f"  eval loss {result.eval_loss:.4f} (ppl {math.exp(result.eval_loss):.2f})"
    print(line)
    if result.losses:
        if result.tokens_per_s > 0:
            rate = f"{result.tokens_per_s:,.0f} tokens/s  MFU {100 * result.mfu:.1f}%"
        else:  # every call of the run included its compilation: nothing steady to time
            rate = "tokens/s n/a (too few steps to time past compilation)"
        print(f"{rate}  wall {result.wall_s:.1f} s")
    if result.sample is not None:
        print("sample:\n" + result.sample)
    return 0


def _restore(cfg, *, need_data: bool, step: int | None = None):
    """Engine + params from the run's latest good checkpoint, or from checkpoint `step`."""
    from lmjax.data import load_tokenizer
    from lmjax.train.checkpoint import CheckpointError, Checkpointer
    from lmjax.train.engine import Engine
    from lmjax.train.loop import workdir_for
    from lmjax.runtime import enable_compilation_cache
    from lmjax.train.task import Data

    enable_compilation_cache()
    workdir = workdir_for(cfg)
    missing = CheckpointError(f"no checkpoint under {workdir / 'checkpoints'}: run `lmjax train {cfg.name}` first "
                              "(with the same --set overrides)")
    if not (workdir / "checkpoints").is_dir():  # opening it would create it
        raise missing
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints, best_metric=None)
    if ckpt.latest_step() is None and not ckpt.set_aside:  # set-aside steps: restore() names them in its error
        raise missing
    data = None
    if not need_data:
        tok = load_tokenizer(workdir / "tokenizer")
        data = Data(tokenizer=tok, vocab_size=tok.vocab_size, train=None)
    engine = Engine(cfg, data=data)
    step, state, _ = ckpt.restore(engine.abstract_state(), step=step)
    ckpt.close()
    return engine, state, step


def _best_step(cfg) -> tuple[int | None, str]:
    """(step, why) of the run's best checkpoint by `train.best_metric`; (None, why not) when there is no checkpoint
    directory yet (`_restore` then says to train), no best metric, or no checkpoint scored by it."""
    from lmjax.train.checkpoint import Checkpointer
    from lmjax.train.engine import best_mode
    from lmjax.train.loop import workdir_for

    metric = cfg.train.best_metric
    directory = workdir_for(cfg) / "checkpoints"
    if not metric or not directory.is_dir():  # opening a missing directory would create it
        return None, "train.best_metric is empty" if metric == "" else "no checkpoint directory"
    ckpt = Checkpointer(directory, keep=cfg.train.keep_checkpoints, best_metric=metric, best_mode=best_mode(cfg))
    step = ckpt.best_step()
    ckpt.close()
    return step, f"the best by {metric}" if step is not None else f"no checkpoint is scored by {metric} yet"


def cmd_eval(args) -> int:
    from lmjax.config import ConfigError

    if args.max_batches is not None and args.max_batches < 1:
        raise ConfigError(f"--max-batches={args.max_batches} is invalid: it must be >= 1 (leave it out for the whole "
                          "split)")
    cfg = _config(args)
    log.info("loading %s and the latest checkpoint of %s", cfg.data.dataset, cfg.name)
    engine, state, step = _restore(cfg, need_data=True)
    batches = engine.eval_batches(args.split, args.max_batches)  # max_batches None: all of them, exact
    if batches is None:
        raise ConfigError(f"dataset {cfg.data.dataset!r} has no {args.split} split for task {cfg.task!r}: "
                          "choose another --split")
    scope = "the whole split" if args.max_batches is None else f"its first {args.max_batches} batches"
    log.info("evaluating step %d on the %s split (%s)", step, args.split, scope)
    if args.as_program and sys.stderr.isatty():  # a long split is not silent
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"eval {args.split}", unit=" batches", leave=False, total=args.max_batches)
    out = engine.evaluate(state.params, batches)
    if args.max_batches is not None:
        out["max_batches"] = args.max_batches
    print(json.dumps({"step": step, "split": args.split, **out, "perplexity": math.exp(min(out["eval_loss"], 700))}))
    return 0


def _check_sampling_args(args) -> None:
    """One-line ConfigErrors for `lmjax generate`'s flags, before a checkpoint is read."""
    from lmjax.config import ConfigError
    from lmjax.ops.sampling import check_sampling

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens={args.max_new_tokens} is invalid: it must be >= 1")
    try:
        check_sampling(args.temperature, args.top_k, args.top_p,
                       names={"temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p"})
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if not args.prompt:
        raise ConfigError("--prompt is empty: give at least one character (the default is a newline)")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError as e:  # argv bytes that are not UTF-8 arrive as lone surrogates U+DC80..U+DCFF
        code = ord(e.object[e.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise ConfigError(f"--prompt is not UTF-8 text ({what} at character {e.start}): pass UTF-8, e.g. "
                          "through `iconv -t utf-8`") from None


def cmd_generate(args) -> int:
    import jax

    from lmjax.config import ConfigError

    _check_sampling_args(args)
    cfg = _config(args)
    engine, state, step = _restore(cfg, need_data=False)
    if engine.task.sample_fn is None:
        raise ConfigError(f"model family {cfg.family!r} (task {cfg.task!r}) does not generate text: "
                          f"`lmjax eval {cfg.name}` reports its loss")
    ids = engine.data.tokenizer.encode(args.prompt)
    if len(ids) == 0:
        raise ConfigError(f"--prompt {args.prompt!r} encodes to no tokens with this run's tokenizer: give text "
                          "it has tokens for")
    context = getattr(cfg.model, "block_size", None)
    if context and len(ids) > context:
        print(f"warning: the prompt is {len(ids)} tokens, longer than the model's context (model.block_size="
              f"{context}): only its last {context} tokens are kept", file=sys.stderr)
    kwargs = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    key = jax.random.PRNGKey(args.seed)
    engine.task.sample_fn(state.params, engine.data.tokenizer, args.prompt, args.max_new_tokens, key, **kwargs)
    t0 = time.perf_counter()  # second call: compiled, so the rate is the decoder's
    text = engine.task.sample_fn(state.params, engine.data.tokenizer, args.prompt, args.max_new_tokens, key, **kwargs)
    dt = time.perf_counter() - t0
    print(text)
    print(f"\n[{args.max_new_tokens} tokens in {dt:.2f} s: {args.max_new_tokens / dt:,.0f} tokens/s, step {step}]",
          file=sys.stderr)
    return 0


def _sentences(args) -> list[str]:
    """The SENTENCE arguments, else the lines of standard input read as UTF-8 (line ends dropped; empty lines
    kept); a one-line ConfigError for text that is not UTF-8."""
    from lmjax.config import ConfigError

    if args.sentences:
        for i, sentence in enumerate(args.sentences):
            try:
                sentence.encode("utf-8")
            except UnicodeEncodeError as e:  # argv bytes that are not UTF-8 arrive as lone surrogates
                raise ConfigError(f"SENTENCE {i + 1} is not UTF-8 text (character {e.start}): pass UTF-8, e.g. "
                                  "through `iconv -t utf-8`") from None
        return list(args.sentences)
    raw = getattr(sys.stdin, "buffer", None)
    try:
        text = raw.read().decode("utf-8") if raw is not None else sys.stdin.read()
    except UnicodeDecodeError as e:
        raise ConfigError(f"standard input is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}): "
                          "pass UTF-8, e.g. through `iconv -t utf-8`") from None
    lines = text.split("\n")
    if lines[-1] == "":  # the last line's end, or no input at all
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def cmd_translate(args) -> int:
    from lmjax.config import ConfigError
    from lmjax.models import transformer

    if args.beam is not None and args.beam < 0:
        raise ConfigError(f"--beam={args.beam} is invalid: it must be >= 0 (0 = greedy; default model.beam_size)")
    cfg = _config(args)
    if cfg.family != "transformer":
        raise ConfigError(f"preset {cfg.name!r} is a {cfg.family!r} model, not a translation model: `lmjax translate` "
                          "takes a transformer preset (e.g. multi30k_transformer; see `lmjax presets`)")
    best, why = _best_step(cfg)
    engine, state, step = _restore(cfg, need_data=False, step=best)
    if best is None:
        print(f"warning: {why}: using the latest checkpoint, step {step}", file=sys.stderr)
    sentences = _sentences(args)
    if not sentences:
        raise ConfigError("no sentences to translate: pass them as arguments or one per line on standard input")
    beam = cfg.model.beam_size if args.beam is None else args.beam
    rows = min(64, max(8, 1 << (len(sentences) - 1).bit_length()))  # a few batch shapes, little padding for few
    t0 = time.perf_counter()
    out = transformer.translate(engine.task.model, state.params, engine.data.tokenizer, sentences, beam_size=beam,
                                batch_size=rows)
    dt = time.perf_counter() - t0
    for line in out:
        print(line)
    sys.stdout.flush()
    how = f"beam {beam}, length penalty {cfg.model.length_penalty}" if beam else "greedy"
    which = why if best is not None else "the latest"
    print(f"[{len(out)} sentences in {dt:.2f} s (any compilation included): {len(out) / dt:,.1f} sentences/s, {how}; "
          f"checkpoint step {step}, {which}]", file=sys.stderr)
    return 0


def _bert_run(cfg, task: str, command: str):
    from lmjax.config import ConfigError

    if cfg.family != "bert" or cfg.task not in task.split("|"):
        raise ConfigError(f"preset {cfg.name!r} is a {cfg.family!r} {cfg.task!r} run: `lmjax {command}` takes a BERT "
                          f"{' or '.join(task.split('|'))} preset (see `lmjax presets`)")


def cmd_fill_mask(args) -> int:
    from lmjax.config import ConfigError
    from lmjax.models import bert

    if args.top_k < 1:
        raise ConfigError(f"--top-k={args.top_k} is invalid: it must be >= 1")
    cfg = _config(args)
    _bert_run(cfg, "pretrain", "fill-mask")
    engine, state, step = _restore(cfg, need_data=False)
    texts = _sentences(args)
    if not texts:
        raise ConfigError("no text to fill: pass it as arguments or one per line on standard input, with [MASK] "
                          "where a word should be predicted")
    for text in texts:
        best = bert.fill_mask(engine.task.model, state.params, engine.data.tokenizer, text, top_k=args.top_k)
        print(text)
        for i, options in enumerate(best, 1):
            print(f"  [MASK] {i}: " + "  ".join(f"{piece} {p:.3f}" for piece, p in options))
    print(f"[checkpoint step {step} of {cfg.name}]", file=sys.stderr)
    return 0


def cmd_predict(args) -> int:
    from lmjax.config import ConfigError
    from lmjax.models import bert

    cfg = _config(args)
    _bert_run(cfg, "classify|tag", "predict")
    best, why = _best_step(cfg)
    engine, state, step = _restore(cfg, need_data=True, step=best)
    lines = _sentences(args)
    if not lines:
        raise ConfigError("no sentences to label: pass them as arguments or one per line on standard input (a pair "
                          "as two sentences separated by a tab)")
    names = engine.data.info["labels"]
    t0 = time.perf_counter()
    if cfg.task == "tag":
        sentences = [line.split() for line in lines]
        for words, tags in zip(sentences, bert.tag(engine.task.model, state.params, engine.data.tokenizer,
                                                   sentences)):
            print(" ".join(f"{w}/{names[t] if t >= 0 else '?'}" for w, t in zip(words, tags)))
    else:
        pairs = None
        if engine.data.info.get("pairs"):
            split = [line.split("\t", 1) for line in lines]
            if any(len(x) != 2 for x in split):
                raise ConfigError(f"{cfg.data.dataset} takes sentence pairs: separate the two sentences of each "
                                  "line by a tab")
            lines, pairs = [a for a, _ in split], [b for _, b in split]
        probs = bert.classify(engine.task.model, state.params, engine.data.tokenizer, lines, pairs)
        for p in probs:
            print(f"{names[int(p.argmax())]}\t{float(p.max()):.3f}")
    dt = time.perf_counter() - t0
    which = why if best is not None else "the latest"
    print(f"[{len(lines)} sentences in {dt:.2f} s: {len(lines) / dt:,.1f} sentences/s; checkpoint step {step}, "
          f"{which}]", file=sys.stderr)
    return 0


def cmd_elmo_features(args) -> int:
    import numpy as np

    from lmjax.config import ConfigError
    from lmjax.data.elmo_data import split_words
    from lmjax.models import elmo

    cfg = _config(args)
    if cfg.family != "elmo":
        raise ConfigError(f"preset {cfg.name!r} is a {cfg.family!r} run: `lmjax elmo-features` takes an ELMo preset "
                          "(see `lmjax presets`)")
    try:
        lines = open(args.input, encoding="utf-8").read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read {args.input!r} as UTF-8 text: {e}") from None
    sentences = [line.split() if args.tokenized else split_words(line) for line in lines]
    if not any(sentences):
        raise ConfigError(f"{args.input!r} holds no words: write one sentence per line")
    engine, state, step = _restore(cfg, need_data=False)
    t0 = time.perf_counter()
    feats = elmo.embed(engine.task.model, state.params, engine.data.tokenizer, [s or ["."] for s in sentences],
                       progress=sys.stderr.isatty())
    feats = [f[:, :len(s)] for f, s in zip(feats, sentences)]
    offsets = np.cumsum([0] + [len(s) for s in sentences])
    np.savez(args.output, features=np.concatenate([f.transpose(1, 0, 2) for f in feats]).astype(np.float32),
             offsets=offsets, words=np.array([" ".join(s) for s in sentences]))
    took = time.perf_counter() - t0
    print(f"wrote {args.output}: {offsets[-1]:,} words of {len(lines):,} lines x {feats[0].shape[0]} layers x "
          f"{feats[0].shape[-1]} ({len(lines) / took:,.0f} sentences/s; checkpoint step {step} of {cfg.name})")
    return 0


def cmd_export(args) -> int:
    from lmjax.train.pretrained import export_params

    step, out = export_params(args.run_dir, args.out_dir)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"exported step {step} of {args.run_dir} to {out} ({size / 2**20:.1f} MiB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmjax", description="Language models in JAX, from n-grams to BERT.")
    p.add_argument("--version", action="version", version=f"lmjax {version()}")
    p.add_argument("--debug", action="store_true",
                   help="on errors, print the traceback and the libraries' diagnostics (also LMJAX_DEBUG=1); "
                        "accepted anywhere on the command line")
    sub = p.add_subparsers(dest="command", required=True)

    def with_preset(name, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("preset", help="preset name (see `lmjax presets`)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
        return sp

    pr = sub.add_parser("presets", help="list presets, one line each: name, family/task, description")
    pr.add_argument("--tasks", action="store_true", help="list the tasks every model family registers instead")
    pr.set_defaults(fn=cmd_presets)
    with_preset("config", "print the resolved config").set_defaults(fn=cmd_config)
    with_preset("train", "train a preset").set_defaults(fn=cmd_train)
    ev = with_preset("eval", "evaluate the latest checkpoint")
    ev.add_argument("--split", choices=("validation", "test"), default="validation")
    ev.add_argument("--max-batches", type=int, default=None, metavar="N",
                    help="score only the first N evaluation batches (default: the whole split, exact)")
    ev.set_defaults(fn=cmd_eval)
    gen = with_preset("generate", "sample text from the latest checkpoint")
    gen.add_argument("--prompt", default="\n")
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(fn=cmd_generate)
    tr = with_preset("translate", "translate sentences (arguments, else stdin lines) with the best checkpoint")
    tr.add_argument("sentences", nargs="*", metavar="SENTENCE",
                    help="source sentences, tokenised as the training data (default: one per line on stdin)")
    tr.add_argument("--beam", type=int, default=None, metavar="N",
                    help="beam size (default model.beam_size; 0 = greedy)")
    tr.set_defaults(fn=cmd_translate)
    fm = with_preset("fill-mask", "a BERT pre-training run's top predictions for each [MASK] of the given text")
    fm.add_argument("sentences", nargs="*", metavar="TEXT", help="text with [MASK] (default: lines of stdin)")
    fm.add_argument("--top-k", type=int, default=5)
    fm.set_defaults(fn=cmd_fill_mask)
    pd = with_preset("predict", "label sentences (arguments, else stdin lines) with a fine-tuned BERT's best checkpoint")
    pd.add_argument("sentences", nargs="*", metavar="SENTENCE",
                    help="a sentence (tagging: words split at spaces; pairs: two sentences separated by a tab)")
    pd.set_defaults(fn=cmd_predict)
    ef = with_preset("elmo-features", "write an ELMo run's three feature layers for every line of a text file")
    ef.add_argument("input", help="UTF-8 text, one sentence per line")
    ef.add_argument("output", help="the .npz to write: features [words, layers, 2P] float32, offsets [lines + 1] "
                                   "(line i is features[offsets[i]:offsets[i+1]]), words (one line of words per "
                                   "line)")
    ef.add_argument("--tokenized", action="store_true", help="words are separated by spaces already (default: "
                                                             "split them as the pre-training corpus was)")
    ef.set_defaults(fn=cmd_elmo_features)
    ex = sub.add_parser("export", help="write a run's latest parameters (no optimizer state) and tokenizer as a "
                                       "directory train.init_from reads")
    ex.add_argument("run_dir", help="a run directory (with checkpoints/)")
    ex.add_argument("out_dir", help="where to write it (replaced if it exists)")
    ex.set_defaults(fn=cmd_export)
    sub.add_parser("compile", help="compile a preset's train step ahead of time for a TPU topology (needs libtpu)")
    sub.add_parser("ngram", help="count-based n-gram LMs: build, score, ppl, next, fill, compare (see -h)")
    sub.add_parser("word2vec", help="word vectors, skip-gram or CBOW: train, neighbours, analogy, similarity, "
                                    "evaluate, plot (see -h)")
    return p


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if "--debug" in raw:  # anywhere: `lmjax train gpt_smoke --debug` as well as `lmjax --debug train ...`
        raw.remove("--debug")
        os.environ["LMJAX_DEBUG"] = "1"  # read by lmjax.train.checkpoint's filters, and by a re-executed child
    if raw[:1] == ["ngram"]:  # commands with parsers of their own (argparse's REMAINDER would swallow a leading -h)
        from lmjax.models import ngram

        return ngram.main(raw[1:])
    if raw[:1] == ["word2vec"]:
        from lmjax.models import word2vec

        return word2vec.main(raw[1:])
    if raw[:1] == ["compile"]:
        from lmjax.train import compile_cli

        return compile_cli.main(raw[1:])
    from lmjax.train import interrupt  # signal handlers first, before JAX's import: no Ctrl-C is ever lost

    with interrupt.signals(exit_at_once=True):  # before the training loop a signal just ends the process
        try:
            return _run(raw, as_program=argv is None)
        except interrupt.Interrupted as e:
            if argv is None:
                _quiet_after_failure()
            print(e.message(), file=sys.stderr, flush=True)
            return e.exit_code
        except KeyboardInterrupt:  # handlers could not be installed (not the main thread)
            print("interrupted by SIGINT: nothing was saved; run the same command again", file=sys.stderr, flush=True)
            return 130


def _run(raw: list[str], *, as_program: bool) -> int:
    """Parse, run the command, and turn an expected failure into one line and status 2."""
    parser = build_parser()
    args, extra = parser.parse_known_args(raw)
    if extra:  # argparse leaves a nargs="*" positional's words after an option unparsed: SENTENCEs, in order
        if args.command != "translate" or any(e.startswith("-") and e != "-" for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.sentences = [*args.sentences, *extra]
    args.as_program = as_program  # process-wide environment changes only when run as the `lmjax` program
    debug = os.environ.get("LMJAX_DEBUG", "").lower() in ("1", "true", "yes")  # as lmjax.train.checkpoint reads it
    if as_program:
        _setup_logging(debug)
    if as_program and args.command in ("train", "eval", "generate", "translate"):
        from lmjax.runtime import reexec_with_tcmalloc

        reexec_with_tcmalloc([sys.executable, "-m", "lmjax", *sys.argv[1:]])
    try:
        return args.fn(args)
    except Exception as e:  # noqa: BLE001 - sorted into expected failures (one line) and bugs (traceback)
        line = _expected_failure(e)
        if line is None:
            raise
        if debug:
            import traceback

            traceback.print_exc()
        elif as_program:
            _quiet_after_failure()
        print(f"error: {line}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
