"""ARPA back-off language model files: the text format SRILM, IRSTLM and KenLM read and write.

A file is a header (`\\data\\`, then `ngram N=count` per order), one section per order (`\\N-grams:`) of lines
`log10 p(w_n | w_1..w_n-1) <TAB> w_1 .. w_n [<TAB> log10 backoff(w_1..w_n)]`, and `\\end\\`. A query
p(w | h) uses the longest stored n-gram `h' w` with h' a suffix of h and multiplies in the backoffs of the longer
suffixes of h that are stored as contexts: log p(w | h) = log p(h' w) + sum of log b(suffixes of h longer than h').

This module only reads and writes the format; `lmjax.models.ngram.NGramModel` owns the tables and the scoring.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from lmjax.data.files import DataError

# One order of an ARPA file: n-grams as rows of vocabulary ids, log10 probabilities, log10 backoffs.
Table = tuple[np.ndarray, np.ndarray, np.ndarray]

_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")


def write_arpa(path: str | Path, vocab: list[str], tables: list[Table]) -> None:
    """Writes `tables[n-1] = (ngrams [M, n] of ids into vocab, log10 probs [M], log10 backoffs [M])` as ARPA."""
    words = np.asarray(vocab, dtype=object)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\\data\\\n")
        for n, (grams, _, _) in enumerate(tables, 1):
            f.write(f"ngram {n}={len(grams)}\n")
        for n, (grams, logprob, backoff) in enumerate(tables, 1):
            f.write(f"\n\\{n}-grams:\n")
            text = words[grams[:, 0]]
            for j in range(1, n):
                text = text + " " + words[grams[:, j]]
            probs = [f"{p:.7g}" for p in logprob.tolist()]
            if n == len(tables):  # the highest order has no backoffs
                f.writelines(f"{p}\t{t}\n" for p, t in zip(probs, text))
            else:
                f.writelines(f"{p}\t{t}\t{b:.7g}\n" for p, t, b in zip(probs, text, backoff.tolist()))
        f.write("\n\\end\\\n")


def read_arpa(path: str | Path) -> tuple[list[str], list[Table]]:
    """Reads an ARPA file into `(vocab, tables)` as `write_arpa` takes them; vocab is the unigrams in file order."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"no ARPA file at {path}: build one with `python -m lmjax.models.ngram build`") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): convert it to UTF-8") from None
    try:
        start = lines.index("\\data\\")
    except ValueError:
        raise DataError(f"{path} is not an ARPA file (no \\data\\ line): pass a .arpa file") from None
    counts, i = [], start + 1
    while i < len(lines) and (m := _COUNT.match(lines[i].strip())):
        counts.append(int(m.group(2)))
        i += 1
    if not counts:
        raise DataError(f"{path} has no `ngram N=count` lines after \\data\\: the ARPA header is damaged")
    sections: list[list[list[str]]] = []
    for line in lines[i:]:
        line = line.strip()
        if not line:
            continue
        if line.startswith("\\") and line.endswith("-grams:"):
            sections.append([])
        elif line == "\\end\\":
            break
        elif sections:
            sections[-1].append(line.split())
    if [len(s) for s in sections] != counts:
        raise DataError(f"{path}: header counts {counts} do not match the sections' "
                        f"{[len(s) for s in sections]} lines: the ARPA file is truncated or damaged")
    vocab = [row[1] for row in sections[0]]
    index = {w: i for i, w in enumerate(vocab)}
    tables = []
    for n, rows in enumerate(sections, 1):
        try:
            grams = np.array([[index[w] for w in row[1:n + 1]] for row in rows], np.int64).reshape(-1, n)
        except KeyError as e:
            raise DataError(f"{path}: the {n}-gram section uses {e.args[0]!r}, which is not a unigram") from None
        logprob = np.array([float(row[0]) for row in rows], np.float32)
        backoff = np.array([float(row[n + 1]) if len(row) > n + 1 else 0.0 for row in rows], np.float32)
        tables.append((grams, logprob, backoff))
    return vocab, tables
