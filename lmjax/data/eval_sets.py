"""Word-embedding evaluation sets: a few small files, read directly rather than through TFDS.

They come from `<data_dir>/word_embedding_eval/` (`data_dir`: the argument, else `$LMJAX_DATA_DIR`), in the formats
gensim's `evaluate_word_analogies` / `evaluate_word_pairs` read: Google's analogy questions (Mikolov et al. 2013)
and the WordSim-353 and SimLex-999 similarity ratings.
"""

from __future__ import annotations

import os
from pathlib import Path

from .files import FIX, REPLACE, DataError, read_text, resolve_data_dir

FOLDER = "word_embedding_eval"
WORD_PAIRS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}


def _path(name: str, data_dir: str | os.PathLike | None) -> Path:
    root = resolve_data_dir(data_dir)
    if root is None:
        raise DataError(f"word-embedding evaluation needs a local {FOLDER}/{name}: {FIX}")
    return root / FOLDER / name


def load_analogies(data_dir: str | os.PathLike | None = None, *,
                   phrases: bool = False) -> dict[str, list[tuple[str, str, str, str]]]:
    """Analogy questions "a is to b as c is to d" as (a, b, c, d), by section, in file order.

    questions-words.txt: 14 sections, 19,544 questions (the first 5 semantic, the rest syntactic); with `phrases`,
    questions-phrases.txt: 5 sections, 3,218 questions. Words keep their case (gensim compares them uppercased).
    """
    path = _path("questions-phrases.txt" if phrases else "questions-words.txt", data_dir)
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    questions = None
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if line.startswith(":"):
            questions = sections.setdefault(line[1:].strip(), [])
        elif line.strip():
            words = tuple(line.split())
            if questions is None or len(words) != 4:
                raise DataError(f"{path} line {number} is not four words under a ': section' line: {REPLACE}")
            questions.append(words)
    return sections


def load_word_pairs(name: str, data_dir: str | os.PathLike | None = None) -> list[tuple[str, str, float]]:
    """(word1, word2, human similarity score 0-10) of "wordsim353" (353 pairs) or "simlex999" (999 pairs)."""
    if name not in WORD_PAIRS:
        raise DataError(f"unknown word-pair set {name!r}: choose one of {', '.join(WORD_PAIRS)}")
    path = _path(WORD_PAIRS[name], data_dir)
    pairs = []
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        try:
            word1, word2, score = fields
            pairs.append((word1, word2, float(score)))
        except ValueError:
            raise DataError(f"{path} line {number} is not 'word1<TAB>word2<TAB>score': {REPLACE}") from None
    return pairs
