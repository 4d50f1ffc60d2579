"""n-gram LM speed against KenLM, side by side in one run: build time vs `lmplz`, scoring tokens/s vs `kenlm`.

    .venv/bin/python benchmarks/ngram_vs_kenlm.py [--order 5] [--repeats 5] [--lmplz PATH]

Build: `NGramModel.fit_file` (counting and modified Kneser-Ney, tables in memory; also timed with the ARPA write)
against `lmplz -o ORDER -S 1G` (which writes ARPA). Scoring: log10 probabilities of every PTB valid+test sentence,
from text, with `NGramModel.token_logprobs` (encoding, then one batched jit call, after a warm-up; also timed
from already encoded ids) against the `kenlm` module's
`Model.score(sentence)` per sentence, both on the lmjax model's ARPA. Medians over `--repeats`. PTB's `<unk>` is
rewritten to `UNK` for both (lmplz refuses a literal `<unk>`). Needs lmplz: build KenLM with cmake (STACK.md).
Writes benchmarks/results/ngram_vs_kenlm.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PTB = pathlib.Path(os.environ.get("LMJAX_DATA_DIR", ROOT.parent / "shared" / "data")) / "ptb"
DEFAULT_LMPLZ = "/work/kenlm-build/build/bin/lmplz"


def find_lmplz(given: str | None) -> str:
    path = given or os.environ.get("LMPLZ") or shutil.which("lmplz") or DEFAULT_LMPLZ
    if not pathlib.Path(path).is_file():
        sys.exit(f"error: no lmplz at {path}: build KenLM (cmake, see STACK.md) and pass --lmplz PATH")
    return path


def ptb_unk_files(workdir: pathlib.Path) -> dict[str, pathlib.Path]:
    """PTB splits with `<unk>` written as `UNK`, the form lmplz accepts (an ordinary word, as PTB intends)."""
    out = {}
    for split in ("train", "valid", "test"):
        src = PTB / f"ptb.{split}.txt"
        if not src.is_file():
            sys.exit(f"error: no {src}: set LMJAX_DATA_DIR to a directory laid out like shared/data")
        out[split] = workdir / f"{split}.txt"
        out[split].write_text(src.read_text(encoding="utf-8").replace("<unk>", "UNK"), encoding="utf-8")
    return out


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(files: dict[str, pathlib.Path], workdir: pathlib.Path, order: int, lmplz: str, repeats: int) -> dict:
    """Build and scoring times for lmjax and KenLM on the same files, interleaved so load hits both alike."""
    import kenlm

    from lmjax.models.ngram import NGramModel, encode, read_lines

    ours_arpa, kenlm_arpa = workdir / "lmjax.arpa", workdir / "lmplz.arpa"
    cmd = [lmplz, "-o", str(order), "-S", "1G", "-T", str(workdir), "--text", str(files["train"]),
           "--arpa", str(kenlm_arpa)]
    build, build_arpa, kenlm_build = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model = NGramModel.fit_file(files["train"], order)
        build.append(time.perf_counter() - t0)
        model.save_arpa(ours_arpa)
        build_arpa.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        kenlm_build.append(time.perf_counter() - t0)
    lines = read_lines(files["valid"]) + read_lines(files["test"])
    tokens = sum(len(s.split()) + 1 for s in lines)
    model.token_logprobs(lines)  # compile
    km = kenlm.Model(str(ours_arpa))
    ours = _median_time(lambda: model.token_logprobs(lines), repeats)
    ids, pos = encode(lines, model.index)
    kernel = _median_time(lambda: model.score_ids(ids, pos), repeats)
    theirs = _median_time(lambda: sum(km.score(s, bos=True, eos=True) for s in lines), repeats)
    return {"order": order, "build_s": statistics.median(build), "build_with_arpa_s": statistics.median(build_arpa),
            "kenlm_build_s": statistics.median(kenlm_build), "score_tokens": tokens,
            "score_tokens_per_s": tokens / ours, "kenlm_score_tokens_per_s": tokens / theirs,
            "score_from_ids_tokens_per_s": tokens / kernel,
            "build_ratio": statistics.median(build) / statistics.median(kenlm_build),
            "score_ratio": theirs / ours, "model": model, "kenlm_arpa": kenlm_arpa}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lmplz")
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "benchmarks" / "results" / "ngram_vs_kenlm.json")
    args = p.parse_args()
    lmplz = find_lmplz(args.lmplz)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        r = measure(ptb_unk_files(work), work, args.order, lmplz, args.repeats)
    r = {k: v for k, v in r.items() if k not in ("model", "kenlm_arpa")}
    print(f"build: lmjax {r['build_s']:.2f} s ({r['build_with_arpa_s']:.2f} s with ARPA), "
          f"lmplz {r['kenlm_build_s']:.2f} s -> {r['build_ratio']:.2f}x lmplz's time")
    print(f"score: lmjax {r['score_tokens_per_s']:,.0f} tokens/s from text "
          f"({r['score_from_ids_tokens_per_s']:,.0f} from ids), kenlm {r['kenlm_score_tokens_per_s']:,.0f} "
          f"tokens/s -> {r['score_ratio']:.2f}x kenlm's throughput")
    from lmjax.train.peak import hardware_summary

    report = {"benchmark": "ngram_vs_kenlm", **r, "repeats": args.repeats, "hardware": hardware_summary(),
              "command": "python benchmarks/ngram_vs_kenlm.py " + " ".join(sys.argv[1:]),
              "date": datetime.date.today().isoformat()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
