"""ELMo pre-trained on the IMDB reviews (BERT's corpus here), its held-out perplexities, and polysemy in numbers.

    python experiments/elmo_imdb.py [--steps N] [--sample-reviews 5000]
    python experiments/elmo_imdb.py --quick --out /tmp/elmo_quick.json      # a seconds-long smoke check

1. `lmjax train elmo_imdb` (runs/elmo_imdb), resumed where it stopped; `--steps N` runs at most N more steps now
   (0: none, use the checkpoint as it is).
2. Forward and backward perplexity over every word of the held-out reviews (every 100th review, states carried
   across the evaluation's contiguous rows), and their curves over the run (experiments/results/elmo_pretrain.png).
3. Polysemy: occurrences of words with two senses told apart by the word before them ("to play" / "the play",
   "was kind" / "some kind", "to present" / "the present", "no match" / "boxing match") in the held-out reviews
   and a sample of training reviews. For each layer: the cosine between two real uses (one of each sense), the
   mean cosine within and across senses, and sense purity: the share of each occurrence's 5 nearest occurrences
   (cosine) that have its sense, against the majority sense's share (what a static vector gets: every use of a
   word has the same vector in word2vec's table and in ELMo's token layer, cosine 1.0).
4. Writes experiments/results/elmo_pretrain.json (fwd_ppl, bwd_ppl, params, tokens_seen, wall_s, ...) and
   experiments/results/elmo_polysemy.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def portable_path(path) -> str:
    """`path` as results files write it (`lmjax.results.portable`: repository-relative, $TMPDIR, ...)."""
    from lmjax.results import portable

    return portable(str(pathlib.Path(path).absolute()))


# word -> sense -> the (lower-cased) words that, just before it, mark that sense
SENSES = {
    "play": {"verb": {"to", "n't", "they", "would", "can", "not", "will", "could", "we", "you", "i", "should",
                      "might", "must"},
             "noun (a stage play)": {"the", "a", "stage", "school", "this", "his", "her", "that", "broadway"}},
    "kind": {"adjective (kindly)": {"was", "is", "very", "so", "too", "be", "are", "were", "being"},
             "noun (a type)": {"some", "this", "any", "what", "that", "these", "same", "worst", "only", "one"}},
    "present": {"verb": {"to", "will", "would", "can", "they", "and"},
                "noun": {"the", "christmas", "a", "birthday", "perfect", "our"}},
    "match": {"contest": {"boxing", "football", "wrestling", "tennis", "chess", "survival", "chamber", "title",
                          "cage", "soccer", "grudge"},
              "an equal": {"no", "perfect", "good", "great", "for"}},
}
NEIGHBOURS = 5
MAX_PER_SENSE = 150


def plot_curves(metrics: pathlib.Path, out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for key, label in (("fwd_loss", "forward"), ("bwd_loss", "backward")):
        held = [(r["step"], math.exp(r[f"eval_{key}"])) for r in rows if f"eval_{key}" in r]
        if held:
            ax.plot(*zip(*held), "o-", label=f"{label}, held-out reviews")
    ax.set_yscale("log")
    ax.set_xlabel("step (64 x 20 words per direction)")
    ax.set_ylabel("perplexity")
    ax.set_title("ELMo biLM on IMDB")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def occurrences(documents: list[str]) -> list[tuple[str, str, list[str], int]]:
    """(word, sense, sentence words, position) for every use of a SENSES word whose previous word marks a sense."""
    from lmjax.data.bert_tasks import split_sentences
    from lmjax.data.elmo_data import split_words

    found, per = [], {}
    for doc in documents:
        for sentence in split_sentences(doc):
            words = split_words(sentence)
            if len(words) > 60:
                continue
            for i, w in enumerate(words[1:], 1):
                senses = SENSES.get(w.lower())
                if not senses:
                    continue
                prev = words[i - 1].lower()
                for sense, cues in senses.items():
                    if prev in cues and per.get((w.lower(), sense), 0) < MAX_PER_SENSE:
                        per[(w.lower(), sense)] = per.get((w.lower(), sense), 0) + 1
                        found.append((w.lower(), sense, words, i))
    return found


def cosine_matrix(x: np.ndarray) -> np.ndarray:
    x = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x @ x.T


def polysemy(model, params, tokenizer, held_docs, train_docs) -> dict:
    from lmjax.models import elmo

    uses = occurrences(held_docs) + occurrences(train_docs)
    feats = elmo.embed(model, params, tokenizer, [u[2] for u in uses])
    vectors = np.stack([f[:, u[3]] for f, u in zip(feats, uses)])  # [N, layers, 2P]
    report, examples = {}, {}
    for word, senses in SENSES.items():
        idx = [i for i, u in enumerate(uses) if u[0] == word]
        labels = np.array([list(senses).index(uses[i][1]) for i in idx])
        counts = np.bincount(labels, minlength=len(senses))
        if len(idx) <= NEIGHBOURS or min(counts) < 2:
            report[f"{word}_n"] = len(idx)
            continue
        report[f"{word}_n"] = len(idx)
        report[f"{word}_sense_counts"] = {s: int(c) for s, c in zip(senses, counts)}
        report[f"{word}_majority_share"] = float(counts.max() / counts.sum())
        first = [next(i for i in idx if uses[i][1] == s) for s in senses]  # one real use of each sense
        examples[word] = [" ".join(uses[i][2]) for i in first]
        for layer in range(vectors.shape[1]):
            sims = cosine_matrix(vectors[idx, layer])
            same = labels[:, None] == labels[None, :]
            off = ~np.eye(len(idx), dtype=bool)
            np.fill_diagonal(sims, -np.inf)
            near = np.argsort(-sims, axis=1)[:, :NEIGHBOURS]
            purity = float(np.mean(labels[near] == labels[:, None]))
            np.fill_diagonal(sims, 1.0)
            a, b = idx.index(first[0]), idx.index(first[1])
            report[f"{word}_layer{layer}_pair_cosine"] = float(sims[a, b])
            report[f"{word}_layer{layer}_within_cosine"] = float(sims[same & off].mean())
            report[f"{word}_layer{layer}_across_cosine"] = float(sims[~same].mean())
            report[f"{word}_layer{layer}_purity"] = purity
            if layer == vectors.shape[1] - 1:
                report[f"{word}_neighbours"] = {
                    s: [" ".join(uses[idx[j]][2]) for j in near[idx.index(first[k])][:3]]
                    for k, s in enumerate(senses)}
    top = vectors.shape[1] - 1
    words = [w for w in SENSES if f"{w}_layer{top}_purity" in report]
    for layer in range(vectors.shape[1]):
        report[f"layer{layer}_purity_mean"] = float(np.mean([report[f"{w}_layer{layer}_purity"] for w in words]))
    report["majority_share_mean"] = float(np.mean([report[f"{w}_majority_share"] for w in words]))
    report["examples"] = examples
    report["words"] = words
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=None,
                   help="at most this many more pre-training steps now (default: to the preset's end; 0: none)")
    p.add_argument("--sample-reviews", type=int, default=5000,
                   help="training reviews searched for polysemous uses, besides the held-out ones")
    p.add_argument("--set", action="append", default=[], help="override for elmo_imdb (repeatable)")
    p.add_argument("--data-dir", default=os.environ.get("LMJAX_DATA_DIR", ""),
                   help="raw datasets laid out like shared/data (default $LMJAX_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help="elmo_smoke's tiny model for 20 steps: a smoke check")
    p.add_argument("--out", type=pathlib.Path, default=None)
    args = p.parse_args()
    if not args.data_dir:
        sys.exit("error: the datasets are read from a local directory: pass --data-dir DIR or set LMJAX_DATA_DIR "
                 "(laid out like shared/data)")

    from lmjax.runtime import reexec_with_tcmalloc, use_ynn_fusion

    use_ynn_fusion()
    reexec_with_tcmalloc([sys.executable, *sys.argv])
    import jax

    from lmjax.config import get_preset
    from lmjax.data.bert_tasks import HELD_OUT, corpus_documents
    from lmjax.results import write_results
    from lmjax.train.loop import train

    preset = "elmo_smoke" if args.quick else "elmo_imdb"
    workdir = ROOT / "runs" / ("elmo_imdb_quick" if args.quick else "elmo_imdb")
    cfg = get_preset(preset, [f"data.data_dir={args.data_dir}", f"train.workdir={workdir}", "train.progress=false",
                              *args.set])
    t0 = time.perf_counter()
    print(f"pre-training (or resuming) {portable_path(workdir)}", flush=True)
    result = train(cfg, stop_after=args.steps)
    engine, params, step = result.engine, result.state.params, result.step
    scores = engine.evaluate(params, max_batches=None)
    metrics = workdir / "metrics.jsonl"
    lines = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    walls = [x["wall_s"] for x in lines if x.get("split") == "train" and "wall_s" in x]
    results_dir = args.out.parent if args.out else ROOT / "experiments/results"
    stem = args.out.stem if args.out else "elmo"
    plot = results_dir / f"{stem}_pretrain.png"
    plot_curves(metrics, plot)
    info, d = engine.data.info, cfg.data
    pretrain = {
        "preset": preset, "step": step, "steps_planned": cfg.train.steps, "finished": step >= cfg.train.steps,
        "fwd_ppl": math.exp(scores["eval_fwd_loss"]), "bwd_ppl": math.exp(scores["eval_bwd_loss"]),
        "eval_words": info["eval_words"], "vocab_size": engine.data.vocab_size, "unk_rate": info["unk_rate"],
        "corpus_words": info["words"], "corpus_types": info["types"],
        "params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))),
        "tokens_seen": step * d.batch_size * d.seq_len,  # words each direction read (both: twice that)
        "epochs": step / max(info["steps_per_epoch"], 1),
        "wall_s": walls[-1] if walls else None,  # the run's time across resumes, as its log records it
        "plot": portable_path(plot), "workdir": portable_path(workdir),
    }
    print(f"step {step}: held-out perplexity forward {pretrain['fwd_ppl']:.1f}, backward {pretrain['bwd_ppl']:.1f} "
          f"({info['eval_words']:,} words, {100 * info['unk_rate']:.2f}% <unk>)", flush=True)
    command = "python experiments/elmo_imdb.py " + " ".join(sys.argv[1:])
    pre_out = args.out.with_name(args.out.stem + "_pretrain.json") if args.out else results_dir / "elmo_pretrain.json"
    write_results(pre_out, pretrain, command=command)

    docs = corpus_documents(d.dataset, d.data_dir or None)
    held = [doc for i, doc in enumerate(docs) if i % HELD_OUT == 0]
    sample = [doc for i, doc in enumerate(docs) if i % HELD_OUT != 0][:(300 if args.quick else args.sample_reviews)]
    report = polysemy(engine.task.model, params, engine.data.tokenizer, held, sample)
    report |= {"step": step, "neighbours": NEIGHBOURS, "layers": "0 = token layer (context-free), 1, 2 = LSTM layers",
               "wall_s": time.perf_counter() - t0}
    top = len([k for k in report if k.startswith("layer") and k.endswith("_purity_mean")]) - 1
    for w in report["words"]:
        print(f"{w:>8}: pair cosine " + " ".join(f"L{k} {report[f'{w}_layer{k}_pair_cosine']:.3f}"
                                                 for k in range(top + 1))
              + f" | purity@{NEIGHBOURS} top {report[f'{w}_layer{top}_purity']:.3f} vs majority "
                f"{report[f'{w}_majority_share']:.3f} ({report[f'{w}_n']} uses)")
    out = args.out or results_dir / "elmo_polysemy.json"
    write_results(out, report, command=command)
    print(f"wrote {portable_path(pre_out)}, {portable_path(out)}")


if __name__ == "__main__":
    main()
