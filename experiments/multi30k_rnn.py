"""Multi30k German -> English with a bi-GRU encoder and a GRU decoder: no attention, additive and multiplicative.

    python experiments/multi30k_rnn.py                         # all three; -> results/multi30k_rnn.json
    python experiments/multi30k_rnn.py --attention additive --steps 400
    python experiments/multi30k_rnn.py heatmap --sentences "ein mann fährt fahrrad ." "tom jagt jerry ."
    python experiments/multi30k_rnn.py --quick --out /tmp/m30k/multi30k_rnn.json   # a 16-wide model, 4 steps

Each model trains through the engine (`lmjax.train.loop.train`, checkpoints under runs/<preset>/), then translates
test2016 greedily (and with beam search, `--beam`), and sacrebleu scores the detokenised-as-is output against the
lowercased, tokenised references of "multi30k/tok" (the setting of the PyTorch seq2seq tutorials). `heatmap` reloads
the trained additive model (a finished run resumes with nothing left to do) and writes one PNG per sentence: source
words against generated words, shaded by the attention weights. Sources may be empty, hold unknown words (they map to
<unk>) or be longer than any training bucket: `seq2seq.pad_sources` pads whatever comes. Multi30k comes from
lmjax.data (`--data-dir`, else $LMJAX_DATA_DIR, else its download). Heatmaps go to multi30k_attention/ beside the
results JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PRESETS = {"additive": "multi30k_additive", "none": "multi30k_no_attention",
           "multiplicative": "multi30k_multiplicative"}
KEYS = {"additive": "bleu_attention_additive", "multiplicative": "bleu_attention_multiplicative",
        "none": "bleu_no_attention"}
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


def run_one(attention: str, args, corpus_cache: dict) -> dict:
    import sacrebleu

    from lmjax.config import get_preset
    from lmjax.train.loop import train

    cfg = get_preset(PRESETS[attention], overrides(args, attention))
    t = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t
    corpus, model = result.engine.data.info["corpus"], result.engine.task.model
    params = result.state.params
    test = corpus.text["test2016"][:args.test_sentences or None]
    sources, refs = [s for s, _ in test], [t for _, t in test]
    hyps, _ = translate(model, params, corpus, sources)
    out = {"preset": cfg.name, "steps": result.step, "eval_loss": result.eval_loss, "train_s": train_s,
           "bleu_greedy": sacrebleu.corpus_bleu(hyps, [refs]).score, "examples": list(zip(sources, hyps))[:3]}
    if args.beam:
        beam_hyps, _ = translate(model, params, corpus, sources, beam_size=args.beam)
        out["bleu_beam"] = sacrebleu.corpus_bleu(beam_hyps, [refs]).score
    if attention != "none":
        out["heatmaps"] = write_heatmaps(model, params, corpus, sources[:3] + ["tom jagt jerry ."],
                                         args.out.parent / "multi30k_attention" / attention)
    print(json.dumps(out, indent=1), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", default="train", choices=("train", "heatmap"))
    p.add_argument("--attention", nargs="*", choices=list(PRESETS),
                   help="the models to train (default all three; --quick: additive)")
    p.add_argument("--steps", type=int, default=0, help="training steps per model (0 = the preset's)")
    p.add_argument("--beam", type=int, default=5, help="beam size for a second BLEU (0 = greedy only)")
    p.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    p.add_argument("--sentences", nargs="*", default=["tom jagt jerry .", ""])
    p.add_argument("--data-dir", default=None, help="raw datasets laid out like shared/data (default "
                                                    "$LMJAX_DATA_DIR)")
    p.add_argument("--test-sentences", type=int, default=0, help="translate only the first N of test2016 (0 = all)")
    p.add_argument("--quick", action="store_true", help="a smoke run: a 16-wide additive-attention model, 4 steps, "
                                                        "beam 2, 40 test sentences, run directories beside --out")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments/results/multi30k_rnn.json",
                   help="results JSON, updated per model (default experiments/results/multi30k_rnn.json)")
    args = p.parse_args()
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

    path = args.out
    results = json.loads(path.read_text()) if path.exists() else {}
    t0 = time.perf_counter()
    for attention in args.attention:
        run = run_one(attention, args, {})
        results[KEYS[attention]] = run["bleu_beam"] if "bleu_beam" in run else run["bleu_greedy"]
        results.setdefault("runs", {})[attention] = run
        results["wall_s"] = results.get("wall_s", 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        write_results(path, results)  # after each model: a run cut short keeps what it measured


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
