"""`lmjax` command line: thin wrappers that parse, build a config and call the library.

    lmjax presets                                   one line per preset
    lmjax train PRESET [--set key=value ...]        train (resumes from the run's latest checkpoint)
    lmjax eval PRESET [--set ...] [--split test]    exact loss/perplexity of the latest checkpoint
    lmjax generate PRESET [--set ...] --prompt TEXT sample from the latest checkpoint, with tokens/s
    lmjax config PRESET [--set ...]                 print the resolved config as JSON
    lmjax compile PRESET --topology v5e:2x4 [--set ...]   TPU memory/FLOPs report from the real compiler
    lmjax ngram {build,score,ppl,next,fill,compare} count-based n-gram LMs (ARPA files, KenLM-compatible)

Errors a user can cause (unknown preset or key, bad value, missing data, broken checkpoint) print one line naming the
fix and exit with status 2, never a stack trace.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time


def _user_errors() -> tuple[type[BaseException], ...]:
    from lmjax.config import ConfigError

    errors: list[type[BaseException]] = [ConfigError]
    try:
        from lmjax.data import DataError

        errors.append(DataError)
    except ImportError:
        pass
    from lmjax.train.checkpoint import CheckpointError

    errors.append(CheckpointError)
    return tuple(errors)


def _config(args):
    from lmjax.config import get_preset

    cfg = get_preset(args.preset, args.set or [])
    if args.as_program and args.command in ("train", "eval", "generate") and cfg.train.dtype == "float32":
        from lmjax.train.peak import use_ynn_fusion

        use_ynn_fusion()
    return cfg


def cmd_presets(args) -> int:
    from lmjax.config import list_presets

    presets = list_presets()
    width = max(map(len, presets))
    for name, desc in presets.items():
        print(f"{name:<{width}}  {desc}")
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
        print(f"{result.tokens_per_s:,.0f} tokens/s  MFU {100 * result.mfu:.1f}%  wall {result.wall_s:.1f} s")
    if result.sample is not None:
        print("sample:\n" + result.sample)
    return 0


def _restore(cfg, *, need_data: bool):
    """Engine + params from the run's latest good checkpoint."""
    from lmjax.data import load_tokenizer
    from lmjax.train.checkpoint import CheckpointError, Checkpointer
    from lmjax.train.engine import Engine
    from lmjax.train.loop import workdir_for
    from lmjax.train.peak import enable_compilation_cache
    from lmjax.train.task import Data

    enable_compilation_cache()
    workdir = workdir_for(cfg)
    ckpt = Checkpointer(workdir / "checkpoints", keep=cfg.train.keep_checkpoints, best_metric=None)
    if ckpt.latest_step() is None:
        raise CheckpointError(f"no checkpoint under {workdir / 'checkpoints'}: run `lmjax train {cfg.name}` first "
                              "(with the same --set overrides)")
    data = None
    if not need_data:
        tok = load_tokenizer(workdir / "tokenizer")
        data = Data(tokenizer=tok, vocab_size=tok.vocab_size, train=None)
    engine = Engine(cfg, data=data)
    step, state, _ = ckpt.restore(engine.abstract_state())
    ckpt.close()
    return engine, state, step


def cmd_eval(args) -> int:
    cfg = _config(args)
    engine, state, step = _restore(cfg, need_data=True)
    batches = None
    if args.split == "test":
        from lmjax.data import eval_windows, lm_corpus

        corpus = lm_corpus(cfg.data, engine.data.tokenizer)
        if corpus.test is None:
            raise SystemExit(f"error: dataset {cfg.data.dataset!r} has no test split")
        batches = eval_windows(corpus.test, cfg.data.batch_size, cfg.data.seq_len)
    out = engine.evaluate(state.params, batches)
    print(json.dumps({"step": step, "split": args.split, **out, "perplexity": math.exp(out["eval_loss"])}))
    return 0


def cmd_generate(args) -> int:
    import jax

    cfg = _config(args)
    engine, state, step = _restore(cfg, need_data=False)
    if engine.task.sample_fn is None:
        raise SystemExit(f"error: model family {cfg.family!r} does not generate text")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lmjax", description="Language models in JAX, from n-grams to BERT.")
    sub = p.add_subparsers(dest="command", required=True)

    def with_preset(name, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("preset", help="preset name (see `lmjax presets`)")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=3e-4 (repeatable)")
        return sp

    sub.add_parser("presets", help="list presets").set_defaults(fn=cmd_presets)
    with_preset("config", "print the resolved config").set_defaults(fn=cmd_config)
    with_preset("train", "train a preset").set_defaults(fn=cmd_train)
    ev = with_preset("eval", "evaluate the latest checkpoint")
    ev.add_argument("--split", choices=("validation", "test"), default="validation")
    ev.set_defaults(fn=cmd_eval)
    gen = with_preset("generate", "sample text from the latest checkpoint")
    gen.add_argument("--prompt", default="\n")
    gen.add_argument("--max-new-tokens", type=int, default=200)
    gen.add_argument("--temperature", type=float, default=0.8)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.set_defaults(fn=cmd_generate)
    sub.add_parser("compile", help="compile a preset's train step ahead of time for a TPU topology (needs libtpu)")
    sub.add_parser("ngram", help="count-based n-gram LMs: build, score, ppl, next, fill, compare (see -h)")
    return p


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["ngram"]:  # commands with parsers of their own (argparse's REMAINDER would swallow a leading -h)
        from lmjax.models import ngram

        return ngram.main(raw[1:])
    if raw[:1] == ["compile"]:
        from lmjax.parallel import compile_cli

        return compile_cli.main(raw[1:])
    args = build_parser().parse_args(argv)
    args.as_program = argv is None  # process-wide environment changes only when run as the `lmjax` program
    if args.as_program and args.command in ("train", "eval", "generate"):
        from lmjax.train.peak import reexec_with_tcmalloc

        reexec_with_tcmalloc([sys.executable, "-m", "lmjax", *sys.argv[1:]])
    try:
        return args.fn(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the latest checkpoint is kept; run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
