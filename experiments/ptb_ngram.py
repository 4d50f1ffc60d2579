"""Modified Kneser-Ney 5-gram on Penn Treebank against KenLM's `lmplz -o 5`, perplexities and speed in one run.

    .venv/bin/python experiments/ptb_ngram.py [--order 5] [--repeats 3] [--kenlm-bin DIR] [--out PATH]
    .venv/bin/python experiments/ptb_ngram.py --quick --out /tmp/ptb_ngram.json   # order 3 on 3,000 lines, once

Both models are estimated from the same ptb.train.txt with PTB's `<unk>` written as `UNK` (lmplz refuses a literal
`<unk>`; PTB's vocabulary is closed, so it is an ordinary word). Perplexity counts every word and every `</s>`
(PTB convention); KenLM's figure is its own query (`kenlm.Model.score`) of lmplz's ARPA. Speed comes from
benchmarks/ngram_vs_kenlm.py's `measure`, in this same run, which also says where PTB and lmplz come from.
Anchor: KN5 test 141.2 (Mikolov et al. 2011). Writes experiments/results/ptb_ngram.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ngram_vs_kenlm import (KENLM_BIN_ENV, add_args, find_lmplz, measure, parse_args,  # noqa: E402
                                       ptb_unk_files)


def kenlm_perplexity(arpa: pathlib.Path, lines: list[str]) -> float:
    import kenlm

    model = kenlm.Model(str(arpa))
    total = sum(model.score(s, bos=True, eos=True) for s in lines)
    return 10.0 ** (-total / sum(len(s.split()) + 1 for s in lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_args(p, ROOT / "experiments" / "results" / "ptb_ngram.json")
    args = parse_args(p, default_repeats=3)
    lmplz = find_lmplz(args.kenlm_bin)
    from lmjax.models.ngram import read_lines
    from lmjax.results import write_results

    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        files = ptb_unk_files(work, args.data_dir, args.lines)
        speed = measure(files, work, args.order, lmplz, args.repeats)
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
                   "train_lines": args.lines or "all"})
    for k, v in result.items():
        print(f"{k:>26}: {v}")
    print(f"wrote {write_results(args.out, result, placeholders={KENLM_BIN_ENV: os.path.dirname(lmplz)})}")


if __name__ == "__main__":
    from lmjax.runtime import run_script

    run_script(main)
