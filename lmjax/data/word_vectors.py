"""Word vectors on disk and the text8 word cleaning, for every model that reads words (word2vec, the transfer rows).

word2vec's C format: a "V d" line, then per word `word v1 .. vd` as text, or `word ` + d float32 (little-endian)
bytes (+ an optional newline) in the binary format. gensim's `KeyedVectors.load_word2vec_format` reads both.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .files import DataError


def write_word2vec_format(words: Sequence[str], vectors: np.ndarray, path: str | Path, binary: bool = False) -> None:
    """Write `words` and their rows of `vectors` [V, d] in word2vec's text or binary format."""
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or len(words) != len(vectors):
        raise ValueError(f"{len(words)} words for vectors of shape {vectors.shape}: give one row per word")
    with open(path, "wb") as f:
        f.write(f"{len(words)} {vectors.shape[1]}\n".encode())
        for word, vec in zip(words, vectors.astype("<f4")):
            if binary:
                f.write(word.encode() + b" " + vec.tobytes() + b"\n")
            else:
                f.write((word + " " + " ".join(f"{x:.9g}" for x in vec) + "\n").encode())


def read_word2vec_format(path: str | Path, binary: bool | None = None) -> tuple[list[str], np.ndarray]:
    """(words, float32 vectors [V, d]) from either format (binary guessed from the bytes when not given)."""
    data = Path(path).read_bytes()
    header, _, body = data.partition(b"\n")
    try:
        n, dim = map(int, header.split())
    except ValueError:
        raise DataError(f"{path} does not start with a 'vocab_size dim' line: is it a word2vec-format file?") from None
    if binary is None:
        binary = b"\0" in body[:4096] or not body[:4096].isascii()
    words, vectors, pos = [], np.empty((n, dim), np.float32), 0
    for i in range(n):
        if binary:
            while body[pos:pos + 1] in (b"\n", b" "):
                pos += 1
            end = body.index(b" ", pos)
            words.append(body[pos:end].decode())
            vectors[i] = np.frombuffer(body, "<f4", dim, end + 1)
            pos = end + 1 + 4 * dim
        else:
            end = body.find(b"\n", pos)
            fields = body[pos:end if end >= 0 else None].split()
            words.append(fields[0].decode())
            vectors[i] = np.array(fields[1:], np.float32)
            pos = end + 1
    return words, vectors


_DIGITS = dict(zip("0123456789", " zero one two three four five six seven eight nine ".split(" ")[1:-1]))


def clean_text8(text: str) -> list[str]:
    """text8-style cleaning (Mahoney's wikifil): lower-case, html breaks removed, digits spelled out, a-z only."""
    text = text.lower().replace("<br />", " ")
    text = re.sub(r"[0-9]", lambda m: f" {_DIGITS[m[0]]} ", text)
    return re.sub(r"[^a-z]+", " ", text).split()
