"""n-gram LM speed against KenLM, side by side in one run: build time vs `lmplz`, scoring tokens/s vs `kenlm`.

    .venv/bin/python benchmarks/ngram_vs_kenlm.py [--order 5] [--repeats 5] [--kenlm-bin DIR] [--out PATH]
    .venv/bin/python benchmarks/ngram_vs_kenlm.py --quick --out /tmp/ngram.json   # order 3 on 3,000 lines, once

Build: `NGramModel.fit_file` (counting and modified Kneser-Ney, tables in memory; also timed with the ARPA write)
against `lmplz -o ORDER -S 1G` (which writes ARPA). Scoring: log10 probabilities of every PTB valid+test sentence,
from text, with `NGramModel.token_logprobs` (encoding, then one batched jit call, after a warm-up; also timed
from already encoded ids) against the `kenlm` module's
`Model.score(sentence)` per sentence, both on the lmjax model's ARPA. Medians over `--repeats`. PTB's `<unk>` is
rewritten to `UNK` for both (lmplz refuses a literal `<unk>`). PTB comes from lmjax.data (`--data-dir`, else
$LMJAX_DATA_DIR, else its download). Needs KenLM's lmplz (`--kenlm-bin DIR`, else $KENLM_BIN, else the PATH) and
the `kenlm` Python module. Writes benchmarks/results/ngram_vs_kenlm.json.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
KENLM_BIN_ENV = "KENLM_BIN"
QUICK_LINES = 3000  # --quick: PTB's first 3,000 train lines and a tenth of that of valid and test


def find_lmplz(kenlm_bin: str | None) -> str:
    """KenLM's lmplz: in `kenlm_bin` (a directory, e.g. KenLM's build/bin), else in $KENLM_BIN, else on the PATH."""
    folder = kenlm_bin or os.environ.get(KENLM_BIN_ENV)
    path = os.path.join(folder, "lmplz") if folder else shutil.which("lmplz")
    if not path or not os.access(path, os.X_OK):
        where = f"no lmplz in {folder}" if folder else "KenLM's lmplz is not on the PATH"
        sys.exit(f"error: {where}: build KenLM (https://github.com/kpu/kenlm, cmake with Boost; see "
                 f"../shared/STACK.md, Peers) and pass --kenlm-bin DIR (its build/bin) or set {KENLM_BIN_ENV}=DIR")
    return path


def ptb_unk_files(workdir: pathlib.Path, data_dir: str | None = None, lines: int = 0) -> dict[str, pathlib.Path]:
    """PTB splits with `<unk>` written as `UNK`, the form lmplz accepts (an ordinary word, as PTB intends); with
    `lines` > 0 only the first `lines` train lines and `lines // 10` of valid and test."""
    from lmjax.data.builders import load_text

    out = {}
    for split, name in (("train", "train"), ("valid", "validation"), ("test", "test")):
        text = load_text("ptb", name, data_dir=data_dir).replace("<unk>", "UNK")
        if lines:
            text = "".join(text.splitlines(keepends=True)[:lines if split == "train" else max(lines // 10, 1)])
        out[split] = workdir / f"{split}.txt"
        out[split].write_text(text, encoding="utf-8")
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


def add_args(p: argparse.ArgumentParser, out: pathlib.Path) -> None:
    """The options this benchmark and experiments/ptb_ngram.py share."""
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--repeats", type=int, default=None, help="timed repeats, medians reported")
    p.add_argument("--kenlm-bin", metavar="DIR", help=f"directory holding KenLM's lmplz (default ${KENLM_BIN_ENV}, "
                                                       "else the PATH)")
    p.add_argument("--data-dir", default=None, help="raw datasets laid out like shared/data (default $LMJAX_DATA_DIR)")
    p.add_argument("--quick", action="store_true", help=f"a smoke run: order 3 on PTB's first {QUICK_LINES:,} "
                                                        "train lines, once")
    p.add_argument("--out", type=pathlib.Path, default=out, help=f"results JSON (default {out.relative_to(ROOT)})")


def parse_args(p: argparse.ArgumentParser, default_repeats: int) -> argparse.Namespace:
    args = p.parse_args()
    if args.quick:
        args.order = 3
    args.repeats = args.repeats or (1 if args.quick else default_repeats)
    args.lines = QUICK_LINES if args.quick else 0
    return args


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_args(p, ROOT / "benchmarks" / "results" / "ngram_vs_kenlm.json")
    args = parse_args(p, default_repeats=5)
    lmplz = find_lmplz(args.kenlm_bin)
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        r = measure(ptb_unk_files(work, args.data_dir, args.lines), work, args.order, lmplz, args.repeats)
    r = {k: v for k, v in r.items() if k not in ("model", "kenlm_arpa")}
    print(f"build: lmjax {r['build_s']:.2f} s ({r['build_with_arpa_s']:.2f} s with ARPA), "
          f"lmplz {r['kenlm_build_s']:.2f} s -> {r['build_ratio']:.2f}x lmplz's time")
    print(f"score: lmjax {r['score_tokens_per_s']:,.0f} tokens/s from text "
          f"({r['score_from_ids_tokens_per_s']:,.0f} from ids), kenlm {r['kenlm_score_tokens_per_s']:,.0f} "
          f"tokens/s -> {r['score_ratio']:.2f}x kenlm's throughput")
    from lmjax.results import write_results

    report = {"benchmark": "ngram_vs_kenlm", **r, "repeats": args.repeats, "train_lines": args.lines or "all"}
    print(f"wrote {write_results(args.out, report, placeholders={KENLM_BIN_ENV: os.path.dirname(lmplz)})}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # lmjax from this checkout, installed or not
    from lmjax.runtime import run_script

    run_script(main)
