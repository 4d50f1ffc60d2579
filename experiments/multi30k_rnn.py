"""Multi30k German -> English with a bi-GRU encoder and a GRU decoder: no attention, additive and multiplicative.

    python experiments/multi30k_rnn.py                         # all three; -> results/multi30k_rnn.json
    python experiments/multi30k_rnn.py --attention additive --steps 400
    python experiments/multi30k_rnn.py heatmap --sentences "ein mann fährt fahrrad ." "tom jagt jerry ."
    python experiments/multi30k_rnn.py rescore                 # BLEU again from the saved hypotheses, no training
    python experiments/multi30k_rnn.py --quick --out /tmp/m30k/multi30k_rnn.json   # a 16-wide model, 4 steps

Each model trains through the engine (`lmjax.train.loop.train`, checkpoints under runs/<preset>/), then translates
the four test sets of "multi30k/tok" (test2016, test2017, test2017_mscoco, test2018) greedily and, with `--beam`,
by beam search. BLEU is the project's one translation convention, `lmjax.scoring.bleu`: sacrebleu with
tokenize='none' on the output as it is against the lowercased, Moses-tokenised references as they are (the same
as multi-bleu.perl on these tokenised files); the results file holds its `sacrebleu_signature` once. The previous
numbers of this script (sacrebleu's default 13a, which re-tokenised the already tokenised text) are not comparable.

Results (`--out`, updated after each model): per model, in "runs" -> <attention>, `bleu_<split>` (beam) and
`bleu_<split>_greedy` for each test set, and `test_sentences` (how many of each were translated); at top level
`bleu_attention_additive`, `bleu_attention_multiplicative`, `bleu_no_attention`: test2016, beam (greedy when
`--beam 0`). Every hypothesis file is kept, one line per source sentence, in <out stem>/hyps/<attention>/
<split>.<greedy|beam>.txt (experiments/results/multi30k_rnn/hyps/... by default); `rescore` reads them and the
references again and rewrites the BLEU numbers and the signature in the results file (its training facts,
`command` and `date` stay; `rescored` says when and how).

`heatmap` reloads the trained additive model (a finished run resumes with nothing left to do) and writes one PNG
per sentence: source words against generated words, shaded by the attention weights. Sources may be empty, hold
unknown words (they map to <unk>) or be longer than any training bucket: `seq2seq.pad_sources` pads whatever comes.
Multi30k comes from lmjax.data (`--data-dir`, else $LMJAX_DATA_DIR, else its download). Heatmaps go to
multi30k_attention/ beside the results JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESETS = {"additive": "multi30k_additive", "none": "multi30k_no_attention",
           "multiplicative": "multi30k_multiplicative"}
KEYS = {"additive": "bleu_attention_additive", "multiplicative": "bleu_attention_multiplicative",
        "none": "bleu_no_attention"}
TESTS = ("test2016", "test2017", "test2017_mscoco", "test2018")
MODES = ("greedy", "beam")
LEGACY = ("bleu_greedy", "bleu_beam")  # test2016 BLEU under sacrebleu's 13a tokeniser: dropped on rewriting a run
QUICK = ["model.embed=16", "model.hidden=16", "model.attention_dim=16", "model.readout=16", "model.max_len=12",
         "data.batch_size=16", "train.steps=4", "train.eval_every=4", "train.eval_batches=2",
         "train.checkpoint_every=4", "train.log_every=2"]


def overrides(args, attention: str) -> list[str]:
    """The run's --set overrides: the data directory, the step count, and for --quick tiny sizes and a run
    directory beside --out."""
    out = [f"data.data_dir={args.data_dir}"] if args.data_dir else []
    if args.quick:
        out += [*QUICK, f"train.workdir={args.out.parent.resolve() / 'runs' / PRESETS[attention]}"]
    out += ["train.progress=false", *args.set]
    return out + ([f"train.steps={args.steps}"] if args.steps else [])


def bleu_key(split: str, mode: str) -> str:
    return f"bleu_{split}" if mode == "beam" else f"bleu_{split}_{mode}"


def hyps_dir(out: pathlib.Path) -> pathlib.Path:
    """<out without .json>/hyps: experiments/results/multi30k_rnn/hyps by default."""
    return out.with_suffix("") / "hyps"


def hyps_path(out: pathlib.Path, attention: str, split: str, mode: str) -> pathlib.Path:
    return hyps_dir(out) / attention / f"{split}.{mode}.txt"


def write_hyps(path: pathlib.Path, hyps: list[str]) -> None:
    """One hypothesis per line (an empty translation is an empty line)."""
    if any("\n" in h for h in hyps):
        raise ValueError(f"a hypothesis for {path} holds a line break: the target tokenizer must decode to one line")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(h + "\n" for h in hyps), encoding="utf-8", newline="\n")


def read_hyps(path: pathlib.Path) -> list[str]:
    from lmjax.data.files import DataError

    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        raise DataError(f"{path} does not end with a line end (cut short?): translate again (train) or restore it")
    return text.split("\n")[:-1]


def load_tests(data_cfg, limit: int = 0) -> dict[str, tuple[list[str], list[str]]]:
    """(sources, references) of each test set, stripped as `seq2seq.load_corpus` strips them; the first `limit`
    pairs of each (0 = all)."""
    from lmjax.data import load

    tests = {}
    for split in TESTS:
        source = load(data_cfg.dataset, split, data_dir=data_cfg.data_dir or None)
        rows = source.__getitems__(list(range(min(len(source), limit) if limit else len(source))))
        tests[split] = ([r["de"].decode().strip() for r in rows], [r["en"].decode().strip() for r in rows])
    return tests


def translate(model, params, corpus, sentences: list[str], *, beam_size: int = 0, batch: int = 100):
    """Translations of `sentences` (greedy, or beam search when beam_size > 0) and greedy attention maps."""
    import numpy as np

    from lmjax.models import seq2seq

    tok, cfg = corpus.tgt_tokenizer, model.config
    out, maps = [], []
    for start in range(0, len(sentences), batch):
        ids = [corpus.src_tokenizer.encode(s) for s in sentences[start:start + batch]]
        src, mask = seq2seq.pad_sources(ids, corpus.src_tokenizer.pad_id)
        if beam_size:
            tokens = seq2seq.beam(model, params, src, mask, bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id,
                                  max_len=cfg.max_len, beam_size=beam_size)
            alphas = None
        else:
            tokens, alphas = seq2seq.greedy(model, params, src, mask, bos_id=tok.bos_id, max_len=cfg.max_len)
        for row, x in enumerate(ids):
            words = seq2seq.cut_at_eos(tokens[row], tok.eos_id)
            out.append(tok.decode(words))
            if alphas is not None:
                maps.append(np.asarray(alphas[row, :len(words) + 1, :len(x)]))
    return out, maps


def heatmap(path: pathlib.Path, src: list[str], hyp: list[str], alpha) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1 + 0.5 * max(len(src), 1), 1 + 0.4 * len(hyp)))
    ax.imshow(alpha, cmap="Greys", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(src)), src, rotation=60, ha="right")
    ax.set_yticks(range(len(hyp)), hyp)
    ax.set_xlabel("source (de)")
    ax.set_ylabel("generated (en)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_heatmaps(model, params, corpus, sentences: list[str], out_dir: pathlib.Path) -> list[str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    hyps, maps = translate(model, params, corpus, sentences)
    paths = []
    for i, (sentence, hyp, alpha) in enumerate(zip(sentences, hyps, maps)):
        src = [corpus.src_tokenizer.id_to_token(t) for t in corpus.src_tokenizer.encode(sentence)]
        path = out_dir / f"attention_{i}.png"
        heatmap(path, src, hyp.split() + ["<eos>"], alpha)
        print(f"{sentence!r} -> {hyp!r}: {path}")
        paths.append(str(path))
    return paths


def run_one(attention: str, args) -> dict:
    """Train one model, translate every test set (greedy, and beam when --beam), write the hypotheses and score
    them; the run's entry of the results file."""
    from lmjax.config import get_preset
    from lmjax import scoring
    from lmjax.train.loop import train

    cfg = get_preset(PRESETS[attention], overrides(args, attention))
    tests = load_tests(cfg.data, args.test_sentences)  # before training: a missing test set fails at once
    t = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t
    corpus, model = result.engine.data.info["corpus"], result.engine.task.model
    params = result.state.params
    out = {"preset": cfg.name, "steps": result.step, "eval_loss": result.eval_loss, "train_s": train_s,
           "test_sentences": {split: len(sources) for split, (sources, _) in tests.items()}}
    for stale in (hyps_dir(args.out) / attention).glob("*.txt"):  # a --beam 0 run must not leave older beam files
        stale.unlink()
    modes = {"greedy": 0, **({"beam": args.beam} if args.beam else {})}
    for split, (sources, refs) in tests.items():
        for mode, beam_size in modes.items():
            hyps, _ = translate(model, params, corpus, sources, beam_size=beam_size)
            write_hyps(hyps_path(args.out, attention, split, mode), hyps)
            out[bleu_key(split, mode)] = scoring.bleu(hyps, refs).score
            if (split, mode) == ("test2016", "greedy"):
                examples = list(zip(sources, hyps))[:3]
    out["examples"] = examples
    if attention != "none":
        sources = tests["test2016"][0]
        out["heatmaps"] = write_heatmaps(model, params, corpus, sources[:3] + ["tom jagt jerry ."],
                                         args.out.parent / "multi30k_attention" / attention)
    print(json.dumps(out, indent=1), flush=True)
    return out


def drop_legacy(results: dict) -> None:
    """Forget the 13a figures of runs scored before this convention (they have no hypothesis files to rescore):
    their `bleu_greedy` / `bleu_beam` and their top-level figure, so that no number in the file disagrees with
    `sacrebleu_signature`. Such a model needs training again."""
    for attention, run in results.get("runs", {}).items():
        if any(k in run for k in LEGACY):
            for key in LEGACY:
                run.pop(key, None)
            if headline(run) is None and results.pop(KEYS.get(attention, ""), None) is not None:
                print(f"note: dropped the old 13a BLEU of {attention!r} (no hypotheses to rescore): train it again",
                      file=sys.stderr)


def headline(run: dict) -> float | None:
    """The top-level figure of a run: test2016, beam (greedy without beam)."""
    return run.get(bleu_key("test2016", "beam"), run.get(bleu_key("test2016", "greedy")))


def rescore(args) -> None:
    """BLEU of every saved hypothesis file against its references, and the signature, into the results file; the
    rest of the file (training facts, `command`, `date`) stays."""
    from lmjax.config import get_preset
    from lmjax.data.files import DataError
    from lmjax import scoring
    from lmjax.results import default_command, portable
    from lmjax.runtime import write_json_atomic

    path, folder = args.out, hyps_dir(args.out)
    if not path.exists():
        raise DataError(f"rescore: no results file {path}: train first, or pass the training run's --out")
    results = json.loads(path.read_text(encoding="utf-8"))
    attentions = args.attention or [a for a in PRESETS if (folder / a).is_dir()]
    if not attentions:
        raise DataError(f"rescore: no hypotheses under {folder}: train first (they are written after each model)")
    for attention in attentions:
        run = results.setdefault("runs", {}).setdefault(attention, {})
        counts = run.get("test_sentences", {})
        tests = load_tests(get_preset(PRESETS[attention], overrides(args, attention)).data)
        scores = {}
        for split, (_, refs) in tests.items():
            for mode in MODES:
                file = hyps_path(path, attention, split, mode)
                if not file.exists():
                    continue
                hyps = read_hyps(file)
                want = counts.get(split, len(refs))
                if len(hyps) != want or want > len(refs):
                    raise DataError(f"rescore: {file} has {len(hyps)} lines but the run translated {want} of "
                                    f"{len(refs)} {split} sentences: translate again (train) or restore the file")
                scores[bleu_key(split, mode)] = scoring.bleu(hyps, refs[:want]).score
        if not scores:
            raise DataError(f"rescore: no hypothesis files in {folder / attention}: train {attention!r} first")
        for key in [k for k in run if k.startswith("bleu_") or k in LEGACY]:
            del run[key]  # only what the files support, under this convention
        run.update(scores)
        results[KEYS[attention]] = headline(run)
        print(f"{attention}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()), flush=True)
    drop_legacy(results)
    results["sacrebleu_signature"] = scoring.bleu_signature()
    results["rescored"] = {"command": portable(default_command()), "date": datetime.datetime.now(
        datetime.timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(path, results, indent=1, ensure_ascii=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", default="train", choices=("train", "heatmap", "rescore"))
    p.add_argument("--attention", nargs="*", choices=list(PRESETS),
                   help="the models to train (default all three; --quick: additive) or rescore (default: those "
                        "with hypotheses)")
    p.add_argument("--steps", type=int, default=0, help="training steps per model (0 = the preset's)")
    p.add_argument("--beam", type=int, default=5, help="beam size for a second BLEU (0 = greedy only)")
    p.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--sentences", nargs="*", default=["tom jagt jerry .", ""])
    p.add_argument("--data-dir", default=None, help="raw datasets laid out like shared/data (default "
                                                    "$LMJAX_DATA_DIR)")
    p.add_argument("--test-sentences", type=int, default=0,
                   help="translate only the first N sentences of each test set (0 = all)")
    p.add_argument("--quick", action="store_true", help="a smoke run: a 16-wide additive-attention model, 4 steps, "
                                                        "beam 2, 40 sentences of each test set, run directories "
                                                        "beside --out")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments/results/multi30k_rnn.json",
                   help="results JSON, updated per model (default experiments/results/multi30k_rnn.json)")
    args = p.parse_args()
    if args.command == "rescore":
        return rescore(args)
    if args.quick:
        args.beam, args.test_sentences = min(args.beam, 2), args.test_sentences or 40
    args.attention = args.attention or (["additive"] if args.quick else ["additive", "none", "multiplicative"])

    from lmjax.results import write_results
    from lmjax.runtime import use_ynn_fusion

    use_ynn_fusion()

    if args.command == "heatmap":
        from lmjax.config import get_preset
        from lmjax.train.loop import train

        cfg = get_preset(PRESETS[args.attention[0]], overrides(args, args.attention[0]))
        result = train(cfg)  # resumes the finished run: nothing left to train
        corpus, model = result.engine.data.info["corpus"], result.engine.task.model
        write_heatmaps(model, result.state.params, corpus, args.sentences, args.out.parent / "multi30k_attention")
        return

    from lmjax import scoring

    path = args.out
    results = json.loads(path.read_text()) if path.exists() else {}
    t0 = time.perf_counter()
    for attention in args.attention:
        run = run_one(attention, args)
        results[KEYS[attention]] = headline(run)
        results["sacrebleu_signature"] = scoring.bleu_signature()
        results.setdefault("runs", {})[attention] = run
        drop_legacy(results)
        results["wall_s"] = results.get("wall_s", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        write_results(path, results)  # after each model: a run cut short keeps what it measured


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
