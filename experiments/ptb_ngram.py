"""Modified Kneser-Ney 5-gram on Penn Treebank against KenLM's `lmplz -o 5`, perplexities and speed in one run.

    .venv/bin/python experiments/ptb_ngram.py [--order 5] [--repeats 3] [--lmplz PATH]

Both models are estimated from the same ptb.train.txt with PTB's `<unk>` written as `UNK` (lmplz refuses a literal
`<unk>`; PTB's vocabulary is closed, so it is an ordinary word). Perplexity counts every word and every `</s>`
(PTB convention); KenLM's figure is its own query (`kenlm.Model.score`) of lmplz's ARPA. Speed comes from
benchmarks/ngram_vs_kenlm.py's `measure`, in this same run. Anchor: KN5 test 141.2 (Mikolov et al. 2011).
Writes experiments/results/ptb_ngram.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ngram_vs_kenlm import find_lmplz, hardware, measure, ptb_unk_files  # noqa: E402


def kenlm_perplexity(arpa: pathlib.Path, lines: list[str]) -> float:
    import kenlm

    model = kenlm.Model(str(arpa))
    total = sum(model.score(s, bos=True, eos=True) for s in lines)
    return 10.0 ** (-total / sum(len(s.split()) + 1 for s in lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lmplz")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "experiments" / "results" / "ptb_ngram.json")
    args = p.parse_args()
    from lmjax.models.ngram import read_lines

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        files = ptb_unk_files(work)
        speed = measure(files, work, args.order, find_lmplz(args.lmplz), args.repeats)
        model = speed.pop("model")
        result = {"order": args.order}
        for split in ("valid", "test"):
            lines = read_lines(files[split])
            result[f"{split}_ppl"] = model.perplexity(lines)
            result[f"kenlm_{split}_ppl"] = kenlm_perplexity(speed["kenlm_arpa"], lines)
        del speed["kenlm_arpa"]
    result.update({k: speed[k] for k in ("build_s", "kenlm_build_s", "score_tokens_per_s",
                                          "kenlm_score_tokens_per_s")})
    result.update({"build_with_arpa_s": speed["build_with_arpa_s"], "build_ratio": speed["build_ratio"],
                   "score_from_ids_tokens_per_s": speed["score_from_ids_tokens_per_s"],
                   "score_ratio": speed["score_ratio"],
                   "discounts": [list(map(float, d)) for d in model.discounts],
                   "valid_rel_diff": result["valid_ppl"] / result["kenlm_valid_ppl"] - 1,
                   "test_rel_diff": result["test_ppl"] / result["kenlm_test_ppl"] - 1,
                   "hardware": hardware(), "command": "python experiments/ptb_ngram.py " + " ".join(sys.argv[1:]),
                   "date": datetime.date.today().isoformat()})
    for k, v in result.items():
        print(f"{k:>26}: {v}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
