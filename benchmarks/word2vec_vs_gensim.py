"""word2vec: lmjax against gensim on the same corpus and hyperparameters, side by side in one run.

    .venv/bin/python benchmarks/word2vec_vs_gensim.py                       # full: IMDB, 5 epochs, sg and CBOW
    .venv/bin/python benchmarks/word2vec_vs_gensim.py --words 2000000 --epochs 1 --skipgram 256:32:64 1024:0
    .venv/bin/python benchmarks/word2vec_vs_gensim.py --hs                  # hierarchical softmax instead
    .venv/bin/python benchmarks/word2vec_vs_gensim.py --seeds 3             # seeds 0-2 each: means and spread
    .venv/bin/python benchmarks/word2vec_vs_gensim.py --quick --out /tmp/w2v.json   # 20,000 words, 1 epoch

Corpus: IMDB train + test reviews, lower-cased with text8-style cleaning (one sentence per review). Both train with
dim 200, window 5, negative 5, sample 1e-3, min_count 5 (gensim: workers=2); with --hs, hierarchical softmax and no
negative sampling instead (gensim hs=1, negative=0; lmjax hs=True, negative=0). Wall time covers vocabulary building
and training (lmjax: also compilation); words/s = corpus tokens x epochs / wall time, the same definition for both.
Quality: Google analogies restricted to the 30k most frequent words (3CosAdd), WordSim-353 and SimLex-999 Spearman,
all computed by lmjax's evaluation on both models' vectors. With --seeds K both train with seeds 0..K-1, alternating,
and the flat keys are means over the K runs (plus `_std` and `_runs`): gensim's threads race, so even one seed moves
its WordSim-353 by several hundredths from run to run. Each algorithm runs in a process of its own. Writes
experiments/results/word2vec_vs_gensim.json (full run) or benchmarks/results/word2vec_tuning.json (a slice or
variants), with --hs *_hs.json. IMDB and the evaluation sets come from lmjax.data (`--data-dir`, else
$LMJAX_DATA_DIR, else their download).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fast_env() -> None:
    """Re-exec once with tcmalloc and the YNN fusion flag (lmjax.runtime.cpu_fast_path); LMJAX_CPU_FAST=0: not."""
    if os.environ.get("LMJAX_CPU_FAST", "1") == "0":
        return
    from lmjax.runtime import cpu_fast_path

    changes = cpu_fast_path()
    if changes and not os.environ.get("W2V_BENCH_CHILD"):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **changes, "W2V_BENCH_CHILD": "1"})


def quality(model, analogies, pairs) -> dict:
    from lmjax.models.word2vec import evaluate_analogies, evaluate_word_pairs

    a = evaluate_analogies(model, analogies)
    return {"analogy": a["total"], "analogy_coverage": a["coverage"],
            "wordsim353": evaluate_word_pairs(model, pairs["wordsim353"])["spearman"],
            "simlex999": evaluate_word_pairs(model, pairs["simlex999"])["spearman"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--words", type=int, default=0, help="use only the first N corpus tokens (0: all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--algorithms", nargs="+", default=["skipgram", "cbow"], choices=["skipgram", "cbow"])
    parser.add_argument("--skipgram", nargs="+", default=None, metavar="B:N[:S[:L[:R[:M]]]]",
                        help="lmjax skip-gram designs as batch_size:shared_negatives[:steps_per_call[:run[:replicas"
                             "[:merge_every]]]] (N=0: negatives per target; run L > 0: steps of B / L runs of L "
                             "consecutive positions; R > 1: R CPU devices, local SGD merged every M calls each); "
                             "default: the design `lmjax word2vec` picks for this machine")
    parser.add_argument("--cbow", nargs="+", default=None, metavar="B:N[:S[:L[:R[:M]]]]",
                        help="the same for CBOW")
    parser.add_argument("--out", help="results JSON (default: experiments/results/word2vec_vs_gensim.json for the "
                                      "whole corpus and one design per algorithm, else benchmarks/results/"
                                      "word2vec_tuning.json)")
    parser.add_argument("--no-gensim", action="store_true")
    parser.add_argument("--seeds", type=int, default=1, help="train each system with seeds 0..K-1 (alternating) and "
                                                             "report the means, standard deviations and each run")
    parser.add_argument("--hs", action="store_true", help="hierarchical softmax, no negative sampling, for both")
    parser.add_argument("--data-dir", default=None, help="raw datasets laid out like shared/data (default "
                                                         "$LMJAX_DATA_DIR)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: the first 20,000 words, 1 epoch, both "
                                                             "algorithms in this process")
    args = parser.parse_args()
    from lmjax.models.word2vec import default_design

    for algo in ("skipgram", "cbow"):
        if getattr(args, algo) is None:
            chosen, why = default_design(algo == "skipgram")
            setattr(args, algo, [chosen])
            print(f"{algo} design {chosen}: {why}", flush=True)
    if args.quick:
        args.words, args.epochs = args.words or 20_000, 1
    if len(args.algorithms) > 1 and not args.quick:  # one process per algorithm: see `separately`
        return separately(args)
    _fast_env()
    import jax

    replicas = max(design(d)[4] for d in args.skipgram + args.cbow)
    jax.config.update("jax_num_cpu_devices", replicas)  # one CPU device per replica, before JAX starts

    import numpy as np

    from lmjax.data import load_analogies, load_word_pairs
    from lmjax.models.word2vec import Vocab, Word2Vec, Word2VecConfig, load_corpus, train

    t0 = time.perf_counter()
    sentences = load_corpus("imdb", args.data_dir)
    if args.words:
        kept, n = [], 0
        for s in sentences:
            if n >= args.words:
                break
            kept.append(s)
            n += len(s)
        sentences = kept
    tokens = sum(map(len, sentences))
    print(f"corpus: {len(sentences):,} reviews, {tokens:,} tokens ({time.perf_counter() - t0:.0f} s to load)")
    analogies = load_analogies(args.data_dir)
    pairs = {name: load_word_pairs(name, args.data_dir) for name in ("wordsim353", "simlex999")}
    results: dict = {"corpus": f"IMDB train+test reviews, text8-style cleaning, {tokens:,} tokens",
                     "tokens": tokens, "epochs": args.epochs,
                     "output_layer": "hierarchical softmax" if args.hs else "negative sampling (5)"}
    negative = 0 if args.hs else 5
    if not args.no_gensim:
        from gensim.models import Word2Vec as GensimWord2Vec
    for algo in args.algorithms:
        sg = algo == "skipgram"
        variants = getattr(args, algo)
        prefixes = {v: "" if len(variants) == 1 else f"{v}_" for v in variants}  # key prefix per lmjax design
        row = {prefixes[v] + "design": "batch_size={}, shared_negatives={}, steps_per_call={}, run={}, replicas={}, "
                                       "merge_every={}".format(*design(v)) for v in variants}
        gensim_runs: list[dict] = []
        lmjax_runs: dict[str, list[dict]] = {v: [] for v in variants}
        for seed in range(args.seeds):  # the systems alternate, so a drift in machine load hits both
            if not args.no_gensim:
                load0 = os.getloadavg()[0]
                t = time.perf_counter()
                g = GensimWord2Vec(sentences, vector_size=200, window=5, negative=negative, hs=int(args.hs),
                                   sample=1e-3, min_count=5, epochs=args.epochs, workers=2, sg=int(sg), seed=seed)
                wall = time.perf_counter() - t
                gmodel = Word2Vec(Vocab(tuple(g.wv.index_to_key), np.array(g.wv.expandos["count"])), g.wv.vectors)
                q = quality(gmodel, analogies, pairs)
                gensim_runs.append({**q, "wall_s": wall, "words_per_s": tokens * args.epochs / wall,
                                    "loadavg_1m": load0})
                print(f"{algo} gensim seed {seed}: {wall:.1f} s, {tokens * args.epochs / wall:,.0f} words/s, {q}",
                      flush=True)
            for variant in variants:
                batch, shared, steps, run, reps, merge = design(variant)
                cfg = Word2VecConfig(sg=sg, epochs=args.epochs, batch_size=batch, shared_negatives=shared,
                                     steps_per_call=steps, run=run, replicas=reps, merge_every=merge,
                                     negative=negative, hs=args.hs, seed=seed)
                load0 = os.getloadavg()[0]
                t = time.perf_counter()
                model = train(sentences, cfg)
                wall = time.perf_counter() - t
                q = quality(model, analogies, pairs)
                lmjax_runs[variant].append({**q, "wall_s": wall, "words_per_s": tokens * args.epochs / wall,
                                            "loadavg_1m": load0})
                print(f"{algo} lmjax B={batch} N={shared} S={steps} L={run} R={reps} M={merge}"
                      f"{' hs' if args.hs else ''} seed {seed}: {wall:.1f} s, "
                      f"{tokens * args.epochs / wall:,.0f} words/s, {q}", flush=True)
        if gensim_runs:
            row.update(summarise(gensim_runs, "gensim_"))
        for variant, runs in lmjax_runs.items():
            row.update(summarise(runs, prefixes[variant]))
        results[algo] = row
        write(results, args)  # after each algorithm: a run cut short keeps what it measured


def summarise(runs: list[dict], prefix: str) -> dict:
    """One system's runs -> flat keys: the mean over seeds; with several seeds also `<key>_std` (sample standard
    deviation) and `<key>_runs` (each seed's value, seed 0 first)."""
    out = {}
    for key in runs[0]:
        values = [r[key] for r in runs]
        out[prefix + key] = statistics.fmean(values)
        if len(runs) > 1:
            out.update({f"{prefix}{key}_std": statistics.stdev(values), f"{prefix}{key}_runs": values})
    return out


def design(variant: str) -> list[int]:
    """B:N[:S[:L[:R[:M]]]] -> [batch, shared negatives, steps per call, run, replicas, merge every]."""
    from lmjax.models.word2vec import parse_design

    return list(parse_design(variant).values())


def separately(args) -> None:
    """Run each algorithm in a child process of its own and merge their results. JAX fixes the number of CPU
    devices (one per replica) when it starts, and a process with two CPU devices leaves a one-device design one
    core's threads: skip-gram ran 15% slower in the same process as CBOW's two replicas."""
    results: dict = {}
    for algo in args.algorithms:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"{algo}.json"
            subprocess.run([sys.executable, __file__, *sys.argv[1:], "--algorithms", algo, "--out", str(out)],
                           check=True)
            results.update(json.loads(out.read_text()))
    write(results, args)


def host_suffix() -> str:
    """"" on Zen 5 (where the first results file was measured), else "_" + the CPU's microarchitecture, e.g.
    "_zen3": one results file per CPU generation."""
    from lmjax.hardware import cpu_info

    arch = cpu_info().microarchitecture
    return "" if arch == "Zen 5" else "_" + re.sub(r"[^a-z0-9]+", "", (arch or "unknown").lower())


def write(results: dict, args) -> None:
    """The results so far, with the hardware (its load average at the end of the run), command and date."""
    from lmjax.results import write_results

    full = not args.words and len(args.skipgram) == len(args.cbow) == 1
    out = Path(args.out) if args.out else REPO / (("experiments/results/word2vec_vs_gensim" + host_suffix() if full
                                                   else "benchmarks/results/word2vec_tuning") +
                                                  ("_hs" if args.hs else "") + ".json")
    print(f"wrote {write_results(out, results)}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
