"""GPT-1-style transfer on SST-2: from scratch, frozen pretrained trunk, and full fine-tuning with an auxiliary LM loss.

    .venv/bin/python experiments/gpt_sst2_finetune.py [--pretrain-steps N] [--finetune-steps N] [--reuse-pretrained]
                                                       [--lr SETTING=LR ...] [--data-dir DIR] [--quick]

1. Pretrains the `gpt_imdb` preset (4 layers x 256, context 128, lowercasing WordPiece of 8,192 pieces fitted on the
   IMDB train reviews) on IMDB review text with the engine (`lmjax.train.loop.train`), in runs/gpt_imdb. Each review
   is preceded by [SEP], GPT-1's delimiter, which the classifier inputs use as start and extract token; `<br />` tags
   become spaces; every tenth IMDB test review is held out for the eval loss. `--reuse-pretrained` resumes from, or
   just reuses, the checkpoint and the tokenizer saved there (WordPiece fitting is not deterministic, so a reused
   checkpoint must come with its own tokenizer).
2. Takes the first 2,000 SST-2 train sentences (the same for every run) as "[SEP] sentence [SEP]".
3. For seeds 0, 1, 2 trains `GPTClassifier` (`make_classifier_task`, the engine's loop) in three settings, each
   for --finetune-steps steps (default 300, 4.8 epochs) of AdamW (weight decay 0.01), batch 32, linear warmup (10%)
   and decay: the GPT paper's fine-tuning recipe, which had lr 6.25e-5, lambda 0.5, dropout 0.1 and 3 epochs for a
   117M model. Learning rates per setting (untuned; --lr overrides):
     scratch   3e-4  same architecture, random init, every parameter trained, dropout 0.1, no auxiliary loss
     frozen    1e-2  pretrained trunk frozen (optim.freeze=^gpt/), only the linear head trained, no dropout: a
                     linear probe; each run checks that the trunk came out bit-identical
     finetune  1e-4  every parameter trained from the pretrained trunk, dropout 0.1, L = L_cls + 0.5 L_lm
   The seed sets the head's (and for scratch the trunk's) initialisation, the batch order and dropout.
4. Scores accuracy on the whole SST-2 dev set (872 sentences) after the last step; no early stopping or selection.
5. Writes experiments/results/gpt_sst2_finetune.json (std over seeds with ddof=1; per-run dev and train accuracy
   under "runs") and prints a table. Run directories: runs/gpt_sst2_finetune/<setting>_s<seed>.

--quick shrinks everything (a 1-layer, 32-wide model, a tenth of the reviews, a few steps) for a smoke check and
writes runs/gpt_sst2_finetune_quick.json instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEEDS = (0, 1, 2)
N_TRAIN = 2000


@dataclasses.dataclass(frozen=True)
class Setting:
    """Where the trunk starts, what trains, and the recipe."""

    pretrained: bool
    freeze: tuple[str, ...]
    lm_weight: float
    lr: float
    dropout: float


def settings(lrs: dict[str, float] | None = None) -> dict[str, Setting]:
    """The three settings; `lrs` overrides learning rates by setting name."""
    from lmjax.models.gpt import FREEZE_TRUNK

    chosen = {
        "scratch": Setting(pretrained=False, freeze=(), lm_weight=0.0, lr=3e-4, dropout=0.1),
        "frozen": Setting(pretrained=True, freeze=FREEZE_TRUNK, lm_weight=0.0, lr=1e-2, dropout=0.0),
        "finetune": Setting(pretrained=True, freeze=(), lm_weight=0.5, lr=1e-4, dropout=0.1),
    }
    return {k: dataclasses.replace(v, lr=(lrs or {}).get(k, v.lr)) for k, v in chosen.items()}


def texts(dataset: str, split: str, field: str, data_dir: str | None, every: int = 1) -> list[str]:
    """One text field of every `every`-th example of a split (batched reads, as `load_text`)."""
    from lmjax.data import load

    source = load(dataset, split, data_dir=data_dir)
    indices = list(range(0, len(source), every))
    out = []
    for start in range(0, len(indices), 4096):
        out += [row[field].decode("utf-8") for row in source.__getitems__(indices[start:start + 4096])]
    return out


# ------------------------------------------------------------------------------------------------------ pretraining


def imdb_lm_data(cfg, tokenizer=None, every: int = 1):
    """The engine's `Data` for pretraining: IMDB reviews (every `every`-th) as one stream, each preceded by [SEP].

    `tokenizer`: reuse this one (else fit cfg.data.tokenizer on the train reviews). Training batches are random
    windows; the eval loss covers `train.eval_batches` batches spread over every tenth test review.
    """
    from lmjax.data import RandomWindows, build_tokenizer, eval_windows
    from lmjax.train.task import Data

    d = cfg.data
    data_dir = d.data_dir or None
    reviews = {split: [t.replace("<br />", " ") for t in texts("imdb", split, "text", data_dir, step)]
               for split, step in (("train", every), ("test", 10 * every))}
    tok = tokenizer or build_tokenizer(d, "\n".join(reviews["train"]))
    sep = tok.sep_id if tok.sep_id is not None else tok.eos_id
    streams = {split: np.concatenate([np.concatenate([[sep], tok.encode(r)]) for r in rs]).astype(np.int32)
               for split, rs in reviews.items()}

    def train(process_index: int, process_count: int):
        return RandomWindows(streams["train"], d.batch_size, d.seq_len, seed=d.seed, process_index=process_index,
                             process_count=process_count)

    def evaluate(process_index: int, process_count: int):
        return eval_windows(streams["test"], d.batch_size, d.seq_len, max_batches=cfg.train.eval_batches,
                            process_index=process_index, process_count=process_count)

    print(f"IMDB: {len(reviews['train']):,} train reviews, {len(streams['train']):,} tokens; held out "
          f"{len(reviews['test']):,} test reviews, {len(streams['test']):,} tokens")
    return Data(tokenizer=tok, vocab_size=tok.vocab_size, train=train, eval=evaluate)


def pretrain(args):
    """Train (or resume, or reuse) the IMDB GPT; returns its config, TrainResult and tokenizer."""
    from lmjax.config import get_preset
    from lmjax.data import load_tokenizer
    from lmjax.data.tokenizers import TOKENIZER_FILE
    from lmjax.train.engine import Engine
    from lmjax.train.loop import train, workdir_for

    name = "gpt_imdb_quick" if args.quick else "gpt_imdb"
    overrides = [f"train.workdir={ROOT / 'runs' / name}", f"train.resume={args.reuse_pretrained}"]
    if args.quick:
        overrides += ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
                      "data.seq_len=32", "data.batch_size=8", "data.vocab_size=2048", "train.eval_every=0",
                      "train.eval_batches=2", "train.checkpoint_every=0", "train.sample_tokens=10",
                      "optim.warmup_steps=2"]
    if args.pretrain_steps is not None:
        overrides.append(f"train.steps={args.pretrain_steps}")
    if args.data_dir:
        overrides.append(f"data.data_dir={args.data_dir}")
    cfg = get_preset("gpt_imdb", overrides)
    saved = workdir_for(cfg) / "tokenizer"
    tokenizer = load_tokenizer(saved) if args.reuse_pretrained and (saved / TOKENIZER_FILE).is_file() else None
    if tokenizer is not None:
        print(f"reusing the tokenizer in {saved}")
    t0 = time.perf_counter()
    data = imdb_lm_data(cfg, tokenizer, every=10 if args.quick else 1)
    print(f"tokenized in {time.perf_counter() - t0:.0f} s")
    result = train(cfg, engine=Engine(cfg, data=data))
    print(f"pretrained: step {result.step}, eval loss {result.eval_loss:.3f}, {result.wall_s:.0f} s, "
          f"{result.tokens_per_s:,.0f} tokens/s\nsample: {result.sample!r}")
    return cfg, result, data.tokenizer


# -------------------------------------------------------------------------------------------------- classification


def sst2(tokenizer, split: str, data_dir: str | None, limit: int | None = None):
    """(ids, labels) of a split's first `limit` sentences, each as [SEP] sentence [SEP]."""
    from lmjax.data import load

    source = load("sst2", split, data_dir=data_dir)
    rows = source.__getitems__(list(range(len(source) if limit is None else limit)))
    sep = tokenizer.sep_id if tokenizer.sep_id is not None else tokenizer.eos_id
    ids = [np.concatenate([[sep], tokenizer.encode(r["sentence"].decode("utf-8")), [sep]]).astype(np.int32)
           for r in rows]
    return ids, np.array([int(r["label"]) for r in rows], np.int32)


def pad_batch(ids, labels, batch_size: int, pad_id: int, max_len: int, multiple: int = 16) -> dict[str, np.ndarray]:
    """Right-padded rows, as wide as the longest one rounded up to `multiple` (a few shapes, one compilation each);
    a row over max_len keeps its first max_len - 1 tokens and its last (the extract token); rows past len(ids) are
    empty (length 0)."""
    ids = [x if len(x) <= max_len else np.concatenate([x[:max_len - 1], x[-1:]]) for x in ids]
    width = min(max_len, -(-max(map(len, ids)) // multiple) * multiple)
    batch = {"inputs": np.full((batch_size, width), pad_id, np.int32),
             "lengths": np.zeros(batch_size, np.int32), "labels": np.zeros(batch_size, np.int32)}
    for row, (x, y) in enumerate(zip(ids, labels)):
        batch["inputs"][row, :len(x)], batch["lengths"][row], batch["labels"][row] = x, len(x), y
    return batch


class SentenceBatches:
    """Training batches: each epoch a permutation by `np.random.default_rng([seed, epoch])`, cut into full batches.

    Resumable: the state is (epoch, index of the next batch in it).
    """

    def __init__(self, ids, labels, batch_size: int, pad_id: int, max_len: int, *, seed: int):
        if len(ids) < batch_size:
            raise ValueError(f"{len(ids)} sentences make no batch of {batch_size}")
        self.ids, self.labels, self.batch_size, self.pad_id, self.max_len = ids, labels, batch_size, pad_id, max_len
        self.seed, self.epoch, self.index = seed, 0, 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.index >= len(self.ids) // self.batch_size:
            self.epoch, self.index = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.ids))
        chunk = order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
        self.index += 1
        return pad_batch([self.ids[i] for i in chunk], self.labels[chunk], self.batch_size, self.pad_id, self.max_len)

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def make_engine(cfg, task, data, trunk):
    """The engine for one run; with `trunk` (host arrays of a GPT's params), fresh states start from it."""
    import jax

    from lmjax.train.engine import Engine

    class PretrainedTrunk(Engine):
        def init_state(self):
            state = super().init_state()
            return state.replace(params={**state.params, "gpt": jax.device_put(trunk, self.param_shardings["gpt"])})

    return (Engine if trunk is None else PretrainedTrunk)(cfg, data=data, task=task)


def accuracy(engine, params, examples, pad_id: int, max_len: int, batch_size: int = 64) -> dict[str, float]:
    """Accuracy and mean classification loss over every example (sorted by length: few shapes, little padding)."""
    import jax

    from lmjax.parallel import host_to_global

    ids, labels = examples
    order = np.argsort([len(x) for x in ids], kind="stable")
    step = jax.jit(lambda p, b: engine.task.loss_fn(p, b, None, False)[1:])
    total = {"correct": 0.0, "cls_loss": 0.0, "count": 0.0}
    with engine.activate():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = pad_batch([ids[i] for i in chunk], labels[chunk], batch_size, pad_id, max_len)
            count, aux = step(params, host_to_global(batch, engine.eval_batch_sharding))
            total["count"] += float(count)
            for k in ("correct", "cls_loss"):
                total[k] += float(aux[k])
    return {"acc": total["correct"] / total["count"], "loss": total["cls_loss"] / total["count"]}


def finetune(pre_cfg, name: str, setting: Setting, seed: int, trunk, train_ex, dev_ex, tokenizer, args) -> dict:
    """One run: train the classifier for --finetune-steps steps, then score dev (and the training sentences)."""
    from lmjax.config import OptimConfig, RunConfig, TrainConfig
    from lmjax.models.gpt import make_classifier_task
    from lmjax.train.loop import train
    from lmjax.train.task import Data

    steps, max_len, pad_id = args.finetune_steps, pre_cfg.model.block_size, tokenizer.pad_id or 0
    cfg = RunConfig(
        name=f"sst2_{name}_s{seed}",
        model=dataclasses.replace(pre_cfg.model, dropout=setting.dropout),
        data=dataclasses.replace(pre_cfg.data, dataset="sst2", seq_len=max_len, batch_size=args.batch_size,
                                 seed=seed),
        optim=OptimConfig(lr=setting.lr, end_lr=0.0, schedule="linear", warmup_steps=steps // 10,
                          weight_decay=0.01, b2=0.999, clip_norm=1.0, freeze=setting.freeze),
        train=TrainConfig(steps=steps, eval_every=0, log_every=10, checkpoint_every=0, keep_checkpoints=1,
                          best_metric="", seed=seed, workdir=str(ROOT / "runs" / args.run_dir / f"{name}_s{seed}"),
                          sample_tokens=0, resume=False, tensorboard=False, plot=False),
    )
    task = make_classifier_task(cfg, tokenizer.vocab_size, 2, lm_weight=setting.lm_weight)
    data = Data(tokenizer=None, vocab_size=tokenizer.vocab_size,
                train=lambda i, n: SentenceBatches(*train_ex, args.batch_size, pad_id, max_len, seed=seed))
    engine = make_engine(cfg, task, data, trunk if setting.pretrained else None)
    result = train(cfg, engine=engine)
    params = result.state.params
    dev = accuracy(engine, params, dev_ex, pad_id, max_len)
    fit = accuracy(engine, params, train_ex, pad_id, max_len)
    run = {"setting": name, "seed": seed, "dev_acc": dev["acc"], "dev_loss": dev["loss"], "train_acc": fit["acc"],
           "train_loss_last": result.train_loss, "wall_s": result.wall_s}
    if setting.pretrained and setting.freeze:  # the engine's freezing, checked: the trunk is the pretrained one
        import jax

        run["trunk_unchanged"] = all(np.array_equal(a, b) for a, b in zip(
            jax.tree.leaves(trunk), jax.tree.leaves(jax.device_get(params["gpt"]))))
        if not run["trunk_unchanged"]:
            raise RuntimeError(f"{name} seed {seed}: the frozen trunk changed during training")
    print(f"{name:>9} seed {seed}: dev acc {dev['acc']:.4f} (loss {dev['loss']:.3f}), train acc {fit['acc']:.4f}, "
          f"{result.wall_s:.0f} s")
    return run


# ------------------------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain-steps", type=int, default=None, help="default: the gpt_imdb preset's train.steps")
    p.add_argument("--finetune-steps", type=int, default=None, help="optimizer steps per run (default 300: 4.8 "
                   "epochs of the 2,000 sentences at batch 32)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", action="append", default=[], metavar="SETTING=LR",
                   help="learning rate of a setting (repeatable; defaults scratch=3e-4 frozen=1e-2 finetune=1e-4)")
    p.add_argument("--reuse-pretrained", action="store_true",
                   help="resume or reuse the checkpoint and tokenizer in runs/gpt_imdb instead of pretraining anew")
    p.add_argument("--data-dir", default=os.environ.get("LMJAX_DATA_DIR"), help="raw datasets ($LMJAX_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and step counts: a smoke check")
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args()
    try:
        lrs = {k: float(v) for k, v in (item.split("=", 1) for item in args.lr)}
    except ValueError:
        p.error(f"--lr takes SETTING=LR, e.g. frozen=3e-3; got {args.lr}")
    if unknown := set(lrs) - set(settings()):
        p.error(f"--lr: unknown setting {sorted(unknown)}; choose from {', '.join(settings())}")
    from lmjax.train.peak import hardware_summary, reexec_with_tcmalloc, use_ynn_fusion

    use_ynn_fusion()  # what `lmjax train` does on CPU, before JAX starts its backend
    reexec_with_tcmalloc([sys.executable, *sys.argv])
    import jax

    if args.finetune_steps is None:
        args.finetune_steps = 10 if args.quick else 300
    if args.quick and args.pretrain_steps is None:
        args.pretrain_steps = 20
    args.run_dir = "gpt_sst2_finetune_quick" if args.quick else "gpt_sst2_finetune"
    out = args.out or (ROOT / "runs" / "gpt_sst2_finetune_quick.json" if args.quick else
                       ROOT / "experiments" / "results" / "gpt_sst2_finetune.json")
    t_start = time.perf_counter()

    pre_cfg, pre, tokenizer = pretrain(args)
    trunk = jax.device_get(pre.state.params)  # host copies: each run's engine donates its own device buffers
    data_dir = args.data_dir or pre_cfg.data.data_dir or None
    train_ex = sst2(tokenizer, "train", data_dir, N_TRAIN)
    dev_ex = sst2(tokenizer, "validation", data_dir)
    print(f"SST-2: {len(train_ex[0])} train sentences ({np.mean(train_ex[1]):.3f} positive), {len(dev_ex[0])} dev "
          f"({np.mean(dev_ex[1]):.3f} positive); mean length {np.mean([len(x) for x in train_ex[0]]):.1f} / "
          f"{np.mean([len(x) for x in dev_ex[0]]):.1f} tokens with [SEP]s")

    runs = []
    for name, setting in settings(lrs).items():
        for seed in SEEDS:
            runs.append(finetune(pre_cfg, name, setting, seed, trunk, train_ex, dev_ex, tokenizer, args))

    report = {}
    for name, setting in settings(lrs).items():
        accs = np.array([r["dev_acc"] for r in runs if r["setting"] == name])
        report[f"{name}_acc_mean"] = float(accs.mean())
        report[f"{name}_acc_std"] = float(accs.std(ddof=1)) if len(accs) > 1 else 0.0
    report |= {
        "hardware": hardware_summary() + " at the end",
        "command": "python experiments/gpt_sst2_finetune.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "std": "sample standard deviation over seeds (ddof=1)",
        "seeds": list(SEEDS),
        "dev_size": len(dev_ex[0]),
        "train_size": len(train_ex[0]),
        "majority_dev_acc": float(max(np.mean(dev_ex[1]), 1 - np.mean(dev_ex[1]))),
        "finetune_steps": args.finetune_steps,
        "batch_size": args.batch_size,
        "settings": {k: dataclasses.asdict(v) for k, v in settings(lrs).items()},
        "pretrain": {"preset": "gpt_imdb", **pre.summary(), "workdir": str(pre.workdir),
                     "model": dataclasses.asdict(pre_cfg.model), "tokenizer": pre_cfg.data.tokenizer,
                     "vocab_size": tokenizer.vocab_size, "reused": bool(args.reuse_pretrained)},
        "runs": runs,
        "wall_s": time.perf_counter() - t_start,
    }
    print(f"\n{'setting':>9}  dev accuracy (mean ± std over {len(SEEDS)} seeds)  per seed")
    for name in settings(lrs):
        per_seed = " ".join(f"{r['dev_acc']:.4f}" for r in runs if r["setting"] == name)
        print(f"{name:>9}  {report[f'{name}_acc_mean']:.4f} ± {report[f'{name}_acc_std']:.4f}"
              f"{'':>24}{per_seed}")
    print(f"majority class: {report['majority_dev_acc']:.4f}; total {report['wall_s']:.0f} s")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
