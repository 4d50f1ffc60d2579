"""Count-based n-gram language models: add-k and interpolated modified Kneser-Ney, in ARPA back-off form.

A sentence `w_1 .. w_k` is scored as `<s> w_1 .. w_k </s>`: log P = sum over t of log p(w_t | w_t-n+1 .. w_t-1),
`</s>` included, `<s>` only conditioned on. Words outside the vocabulary are mapped to `<unk>` (a literal `<unk>` in
training text is counted as that token); the vocabulary is every training word plus `<unk>`, `<s>`, `</s>`.

**Counting** is vectorised: each n-gram gets an integer id from the id of its (n-1)-word prefix and its last word
(`id_n = unique(id_{n-1}[t-1] * V + w_t)`), so any order is a few `np.unique` calls over int64 keys.

**Modified Kneser-Ney** (Chen and Goodman 1998, as KenLM's `lmplz` estimates it). Adjusted counts a(g): raw counts
for the highest order and for n-grams that start with `<s>`; otherwise the number of distinct words seen to the left
of g. Per order, from the counts-of-counts t_j of adjusted counts, Y = t_1 / (t_1 + 2 t_2) and
D_j = j - (j + 1) Y t_j+1 / t_j for j = 1, 2, 3+; when some t_j is 0 or a D_j falls outside [0, j], the order falls
back to D = (0.5, 1.0, 1.5) (`lmplz --discount_fallback`). Then, with h' the context h without its first word,

    p(w | h) = (a(h w) - D(a(h w))) / sum_v a(h v)  +  gamma(h) p(w | h'),
    gamma(h) = (D_1 N_1(h .) + D_2 N_2(h .) + D_3+ N_3+(h .)) / sum_v a(h v),

bottoming out in the uniform distribution over the vocabulary without `<s>`. Stored in ARPA form, p(h w) is the
interpolated probability and the backoff of h is gamma(h), so a plain back-off query gives the interpolated model.

**Add-k** (Laplace for k = 1): p(w | h) = (c(h w) + k) / (c(h) + k V) with h the n-1 previous words (fewer at a
sentence's start), which the same back-off form stores exactly: the conditional at the "top" n-grams (full order, or
starting with `<s>`), 1/V at the others, and backoff kV / (c(h) + kV) at their contexts.

**Scoring** is vectorised NumPy over a flat batch of sentences (a query is a few random reads per token, which
host arrays do faster than a jit-compiled gather on CPU, with no compilation or copies): per order, a linear-probing
hash table keyed on (slot of the (n-1)-word prefix, word) holds each n-gram at a slot that is its index for the order
above; order n looks up only the positions whose (n-1)-gram ending one earlier was found, and the longest match's
probability plus the backoffs of the longer contexts gives each token's log10 probability. Text reaches it as
ids found on its UTF-8 bytes, without a Python string per word (`encode`).

CLI: `python -m lmjax.models.ngram {build,score,ppl,next,fill,compare} ...` (see `main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import re
import sys
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from lmjax.config import ConfigError
from lmjax.data.files import DataError
from lmjax.interop.arpa import read_arpa, write_arpa

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
BLANK = "___"


# ------------------------------------------------------------------------------------------------------- hashing

_FIBONACCI = -0x61C8864680B583EB  # 2^64 / golden ratio (0x9E3779B97F4A7C15) as a signed int64


def _home(keys: np.ndarray, bits: int) -> np.ndarray:
    """Home slot of int64 keys in a table of 2^bits slots: Fibonacci hashing (the top bits of key * 2^64/phi, in
    wrapping int64 arithmetic)."""
    return ((keys * _FIBONACCI) >> (64 - bits)) & ((1 << bits) - 1)


def _place(keys: np.ndarray) -> tuple[int, np.ndarray, int]:
    """Linear probing without wrap-around at load in [1/4, 1/2), placed in one pass: with keys sorted by home slot,
    key i lands at max(home_i, slot_i-1 + 1) = i + cummax(home_j - j), so a running maximum replaces insertion.

    Returns the table's bits, each key's slot and the longest displacement + 1 (slots past 2^bits that may be used;
    the table keeps them, so probing never runs off its end: the last slot is always empty).
    """
    bits = max(4, (2 * len(keys)).bit_length())
    home = _home(keys, bits)
    by_home = np.argsort(home, kind="stable")
    rank = np.arange(len(keys))
    placed = rank + np.maximum.accumulate(home[by_home] - rank) if len(keys) else rank
    slot = np.empty(len(keys), np.int64)
    slot[by_home] = placed
    return bits, slot, int((placed - home[by_home]).max(initial=0)) + 1


# ----------------------------------------------------------------------------------------------------- text to ids

def read_lines(path: str | Path) -> list[str]:
    """A text file's lines (one sentence each; a final newline does not start another), strictly UTF-8."""
    try:
        return Path(path).read_bytes().decode("utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"no file at {path}: pass a text file with one sentence per line") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): "
                        "convert it first, e.g. `iconv -f latin1 -t utf-8`") from None


_ASCII_SPACES = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.split() splits on below 128 ...
_OTHER_SPACES = re.compile("[\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")  # ... and above
_IS_SPACE = np.isin(np.arange(256), list(_ASCII_SPACES))
_FIRST_BYTES = np.array([(1 << 8 * k) - 1 for k in range(8)] + [-1], np.int64)  # keeps the first k of 8 bytes
_LONG = 16  # tokens of this many UTF-8 bytes or more are looked up in the dictionary, one by one


def _byte_keys(buf: bytes, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact keys of the byte strings buf[start:start+length] shorter than `_LONG` bytes: their first 8 bytes and
    their next 7 with the length in the top byte, both as int64. `buf` must have 16 bytes past the last string."""
    eight = np.ndarray((len(buf) - 7,), np.dtype("<i8"), buffer=buf, strides=(1,))  # 8 bytes from every offset
    first = eight.take(starts) & _FIRST_BYTES.take(np.minimum(lengths, 8))
    rest = eight.take(starts + 8) & _FIRST_BYTES.take(np.clip(lengths - 8, 0, 7))
    return first, rest | (np.minimum(lengths, _LONG) << 56)


def _mix(first: np.ndarray, rest: np.ndarray) -> np.ndarray:
    return first * _FIBONACCI + rest


@dataclasses.dataclass(frozen=True)
class _ByteVocab:
    """The vocabulary's words shorter than `_LONG` UTF-8 bytes in a linear-probing hash table of word ids, keyed
    on `_byte_keys`; `first` and `rest` are per word id (one more, never matching, at -1 for empty slots)."""
    bits: int
    slots: np.ndarray  # word id or -1
    first: np.ndarray
    rest: np.ndarray

    @classmethod
    def build(cls, words: Sequence[str]) -> "_ByteVocab":
        utf8 = [w.encode("utf-8", "surrogatepass") for w in words]
        lengths = np.fromiter(map(len, utf8), np.int64, len(utf8))
        first, rest = _byte_keys(b"".join(utf8) + bytes(16), np.cumsum(lengths) - lengths, lengths)
        short = np.flatnonzero(lengths < _LONG)
        bits, slot, probes = _place(_mix(first[short], rest[short]))
        slots = np.full((1 << bits) + probes, -1, np.int64)
        slots[slot] = short
        return cls(bits, slots, np.append(first, -1), np.append(rest, -1))  # no UTF-8 has 8 bytes 0xff

    def lookup(self, first: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """Word ids of keys, `<unk>`'s where absent: every key probes its home slot at once, then the few that met
        another word there probe on together."""
        slot = _home(_mix(first, rest), self.bits)
        word = self.slots.take(slot)
        hit = (self.first.take(word) == first) & (self.rest.take(word) == rest)
        ids = np.where(hit, word, UNK_ID)
        todo = np.flatnonzero((word >= 0) & ~hit)
        slot, first, rest = slot.take(todo), first.take(todo), rest.take(todo)
        while len(todo):
            slot += 1
            word = self.slots.take(slot)
            hit = (self.first.take(word) == first) & (self.rest.take(word) == rest)
            ids[todo[hit]] = word[hit]
            more = np.flatnonzero((word >= 0) & ~hit)
            todo, slot, first, rest = todo.take(more), slot.take(more), first.take(more), rest.take(more)
        return ids


class _WordIndex(dict):
    """word -> id, with `<unk>`'s id for any word not in it, and the same map on UTF-8 bytes (`_ByteVocab`, built on
    first use: do not change the dictionary after encoding with it)."""

    def __missing__(self, word: str) -> int:
        return UNK_ID

    @functools.cached_property
    def by_bytes(self) -> _ByteVocab:
        words = [""] * (max(self.values(), default=-1) + 1)  # "" (length 0) matches no token
        for w, i in self.items():
            words[i] = w
        return _ByteVocab.build(words)


def _split_ids(text: str, index: _WordIndex) -> np.ndarray:
    """The ids of `text.split()`'s words, found without making the words: one pass over the UTF-8 bytes for token
    boundaries (ASCII whitespace; the caller rules out any other), then `_ByteVocab.lookup` on exact byte keys, and
    the dictionary for the few tokens of `_LONG` bytes or more."""
    raw = text.encode("utf-8", "surrogatepass")  # lone surrogates too: the vocabulary is encoded the same way
    space = np.ones(len(raw) + 2, bool)
    _IS_SPACE.take(np.frombuffer(raw, np.uint8), out=space[1:-1])
    edges = np.flatnonzero(space[1:] != space[:-1])  # a token starts at each even edge and ends at the next
    starts, lengths = edges[0::2], edges[1::2] - edges[0::2]
    ids = index.by_bytes.lookup(*_byte_keys(raw + bytes(16), starts, lengths))
    for i in np.flatnonzero(lengths >= _LONG).tolist():
        ids[i] = index[raw[starts[i]: starts[i] + lengths[i]].decode("utf-8", "surrogatepass")]
    return ids


def encode(lines: Sequence[str], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace-split sentences -> flat ids `<s> w.. </s> <s> ..` and each token's position in its sentence.

    Unknown words become `<unk>`; a literal `<s>` or `</s>` inside a sentence is an error. The sentences are joined
    into one text with ` </s> <s> ` between them (a sentence's words are still what `line.split()` gives), markers
    included, whose words are looked up on their bytes (`_split_ids`), or, when the text has whitespace beyond
    ASCII, with one `str.split` and a dictionary lookup per word.
    """
    if not isinstance(index, _WordIndex):
        index = _WordIndex(index)
    if len(lines) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    text = f"{BOS} {f' {EOS} {BOS} '.join(lines)} {EOS}"
    if text.isascii() or not _OTHER_SPACES.search(text):
        ids = _split_ids(text, index).astype(np.int32)
    else:
        words = text.split()
        ids = np.fromiter(map(index.__getitem__, words), np.int32, len(words))
    starts = np.flatnonzero(ids == BOS_ID)
    if len(starts) != len(lines) or np.count_nonzero(ids == EOS_ID) != len(lines):
        raise DataError(f"the text contains a literal {BOS} or {EOS}: remove them, sentence boundaries are lines")
    lengths = np.diff(starts, append=len(ids))
    return ids, np.arange(len(ids), dtype=np.int32) - np.repeat(starts.astype(np.int32), lengths)


# ---------------------------------------------------------------------------------------------------- estimation

@dataclasses.dataclass(frozen=True)
class _Order:
    """The distinct n-grams of one order, sorted by (prefix id, last word), with their statistics."""
    prefix: np.ndarray  # id of the first n-1 words in the order below (for unigrams: 0)
    word: np.ndarray
    count: np.ndarray  # raw count
    suffix: np.ndarray  # id of the last n-1 words in the order below (for unigrams: -1)
    bos: np.ndarray  # starts with <s>


def _count(ids: np.ndarray, pos: np.ndarray, order: int, vocab_size: int) -> list[_Order]:
    """Every order's distinct n-grams of the padded corpus; unigrams are indexed by word id (all of the vocab)."""
    raw = np.bincount(ids, minlength=vocab_size)
    raw[BOS_ID] = 0  # <s> is only ever a context
    orders = [_Order(np.zeros(vocab_size, np.int64), np.arange(vocab_size), raw, np.full(vocab_size, -1),
                     np.arange(vocab_size) == BOS_ID)]
    gram_id = ids.astype(np.int64)  # id of the n-gram ending at each position (-1: runs past <s>)
    for n in range(2, order + 1):
        valid = np.flatnonzero(pos >= n - 1)
        keys = gram_id[valid - 1] * vocab_size + ids[valid]
        uniq, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        at = valid[first]
        orders.append(_Order(uniq // vocab_size, uniq % vocab_size, counts, gram_id[at], pos[at] == n - 1))
        gram_id = np.full(len(ids), -1, np.int64)
        gram_id[valid] = inverse
    return orders


def discounts(adjusted: np.ndarray) -> tuple[float, float, float]:
    """Chen and Goodman's D_1, D_2, D_3+ from one order's adjusted counts (KenLM's fallback if inestimable)."""
    t = np.bincount(np.minimum(adjusted[adjusted > 0], 5), minlength=6).astype(np.float64)
    if np.all(t[1:4] > 0):
        y = t[1] / (t[1] + 2 * t[2])
        d = tuple(j - (j + 1) * y * t[j + 1] / t[j] for j in (1, 2, 3))
        if all(0 <= dj <= j for j, dj in zip((1, 2, 3), d)):
            return d
    warnings.warn(f"Kneser-Ney discounts cannot be estimated from counts-of-counts {t[1:5].astype(int).tolist()} "
                  f"(too little or artificial data); using the fallback {FALLBACK_DISCOUNTS}", stacklevel=3)
    return FALLBACK_DISCOUNTS


def _kneser_ney(orders: list[_Order], uniform: float) -> tuple[list[np.ndarray], list[np.ndarray], list]:
    """Interpolated modified Kneser-Ney: per order log10 p and log10 backoff, and the discounts used."""
    top = len(orders)
    adjusted = [o.count if n == top else np.where(o.bos, o.count, 0) for n, o in enumerate(orders, 1)]
    for n in range(1, top):  # continuation counts: distinct left extensions among the order above
        left = np.bincount(orders[n].suffix, minlength=len(orders[n - 1].word))
        adjusted[n - 1] = np.where(orders[n - 1].bos, adjusted[n - 1], left)
    adjusted[0][BOS_ID] = 0
    probs, gammas, used = [], [], []
    lower = np.full(1, uniform)
    for n, (o, a) in enumerate(zip(orders, adjusted), 1):
        d = discounts(a)
        used.append(d)
        n_ctx = 1 if n == 1 else len(orders[n - 2].word)
        denom = np.bincount(o.prefix, weights=a, minlength=n_ctx)
        mass = sum(dj * np.bincount(o.prefix, weights=(np.minimum(a, 3) == j), minlength=n_ctx)
                   for j, dj in zip((1, 2, 3), d))
        gamma = np.divide(mass, denom, out=np.zeros(n_ctx), where=denom > 0)
        own = (a - np.choose(np.minimum(a, 3), (0.0,) + d)) / np.maximum(denom[o.prefix], 1)
        p = own + gamma[o.prefix] * (lower[0] if n == 1 else lower[o.suffix])
        probs.append(p)
        gammas.append(gamma)
        lower = p
    logprob = [np.log10(np.maximum(p, 1e-99)).astype(np.float32) for p in probs]
    logprob[0][BOS_ID] = -99.0
    backoff = [np.log10(np.where(g > 0, g, 1.0)).astype(np.float32) for g in gammas[1:]] + [
        np.zeros(len(orders[-1].word), np.float32)]
    return logprob, backoff, used


def _add_k(orders: list[_Order], k: float, vocab: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Add-k in back-off form: conditionals at the top n-grams, 1/V elsewhere, kV/(c(h)+kV) at their contexts."""
    top = len(orders)
    logprob, backoff = [], []
    for n, o in enumerate(orders, 1):
        is_top = np.ones(len(o.word), bool) if n == top else o.bos.copy()
        n_ctx = 1 if n == 1 else len(orders[n - 2].word)
        c_h = np.bincount(o.prefix, weights=o.count * is_top, minlength=n_ctx)
        p = np.where(is_top, (o.count + k) / (c_h[o.prefix] + k * vocab), 1.0 / vocab)
        logprob.append(np.log10(p).astype(np.float32))
        if n > 1:
            has_top = np.bincount(o.prefix, weights=is_top, minlength=n_ctx) > 0
            backoff.append(np.where(has_top, np.log10(k * vocab / (c_h + k * vocab)), 0.0).astype(np.float32))
    logprob[0][BOS_ID] = -99.0
    return logprob, backoff + [np.zeros(len(orders[-1].word), np.float32)]


# ------------------------------------------------------------------------------------------------------- scoring

@dataclasses.dataclass(frozen=True)
class _HashOrder:
    """One order's n-grams (n >= 2) in a linear-probing hash table whose slot is the n-gram's index everywhere here.

    key = slot of the (n-1)-word prefix in the order below (word id for bigrams) * V + last word; the n-gram's
    log10 p and backoff are stored at the same slot, and the order above keys on it.
    """
    keys: np.ndarray  # int64 [2^bits + probes], -1 where empty
    bits: int
    logprob: np.ndarray  # float32, per slot
    backoff: np.ndarray  # float32, per slot


def _find(order: _HashOrder, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the keys present, their slots). All keys probe their home slot at once; only those that met
    another key there probe on, one slot per round, as a shrinking set."""
    slot = _home(keys, order.bits)
    found = order.keys.take(slot)
    hit = found == keys
    todo = np.flatnonzero((found >= 0) & ~hit)
    at, key = slot.take(todo), keys.take(todo)
    while len(todo):
        at += 1
        found = order.keys.take(at)
        now = found == key
        if now.any():
            done = np.flatnonzero(now)
            hit[todo.take(done)] = True
            slot[todo.take(done)] = at.take(done)
        more = np.flatnonzero((found >= 0) & ~now)
        todo, at, key = todo.take(more), at.take(more), key.take(more)
    present = np.flatnonzero(hit)
    return present, slot.take(present)


# --------------------------------------------------------------------------------------------------------- model

@dataclasses.dataclass(frozen=True)
class NGramModel:
    """An n-gram LM in back-off form. Order-n tables (n >= 2) are sorted by (prefix id, word); unigrams by word id."""
    vocab: tuple[str, ...]
    prefix: tuple[np.ndarray, ...]  # per order >= 2: row of the (n-1)-word prefix in the order below
    word: tuple[np.ndarray, ...]  # per order >= 2: last word
    logprob: tuple[np.ndarray, ...]  # per order: log10 p, float32
    backoff: tuple[np.ndarray, ...]  # per order: log10 backoff (0 where not a context), float32
    discounts: tuple = ()  # Kneser-Ney D_1, D_2, D_3+ per order, when estimated here

    @property
    def order(self) -> int:
        return len(self.logprob)

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return _WordIndex((w, i) for i, w in enumerate(self.vocab))

    @functools.cached_property
    def _hashed(self) -> tuple[_HashOrder, ...]:
        """Per order >= 2 the scoring hash table, each keyed on the slots of the one below."""
        orders, below = [], None  # below: slot of each row of the order below (None: unigrams, slot = word id)
        for prefix, word, logprob, backoff in zip(self.prefix, self.word, self.logprob[1:], self.backoff[1:]):
            keys = (prefix if below is None else below[prefix]).astype(np.int64) * len(self.vocab) + word
            bits, below, probes = _place(keys)
            table = np.full((1 << bits) + probes, -1, np.int64)
            table[below] = keys
            lp, bo = np.zeros(len(table), np.float32), np.zeros(len(table), np.float32)
            lp[below], bo[below] = logprob, backoff
            orders.append(_HashOrder(table, bits, lp, bo))
        return tuple(orders)

    # ------------------------------------------------------------------------------------------ estimation, I/O
    @classmethod
    def fit(cls, lines: Sequence[str], order: int, smoothing: str = "kneser_ney", k: float = 1.0) -> "NGramModel":
        """Estimates a model from sentences (one per item, whitespace-tokenised)."""
        if not isinstance(order, int) or order < 1:
            raise ConfigError(f"n-gram order must be an integer >= 1, got {order!r}: pass e.g. --order 3")
        if smoothing not in ("kneser_ney", "add_k"):
            raise ConfigError(f"unknown smoothing {smoothing!r}: use kneser_ney or add_k")
        if smoothing == "add_k" and not k > 0:
            raise ConfigError(f"add-k needs k > 0, got {k}: pass e.g. --k 1 (Laplace) or --k 0.01")
        words = dict.fromkeys(itertools.chain.from_iterable(line.split() for line in lines))
        if not words:
            raise DataError("the training corpus has no words: pass a non-empty text file, one sentence per line")
        vocab = (UNK, BOS, EOS) + tuple(w for w in words if w not in (UNK, BOS, EOS))
        ids, pos = encode(lines, _WordIndex((w, i) for i, w in enumerate(vocab)))
        orders = _count(ids, pos, order, len(vocab))
        if smoothing == "kneser_ney":
            logprob, backoff, used = _kneser_ney(orders, 1.0 / (len(vocab) - 1))
        else:
            (logprob, backoff), used = _add_k(orders, k, len(vocab) - 1), []
        return cls(vocab, tuple(o.prefix for o in orders[1:]), tuple(o.word for o in orders[1:]),
                   tuple(logprob), tuple(backoff), tuple(used))

    @classmethod
    def fit_file(cls, path: str | Path, order: int, smoothing: str = "kneser_ney", k: float = 1.0) -> "NGramModel":
        return cls.fit(read_lines(path), order, smoothing, k)

    def ngrams(self, n: int) -> np.ndarray:
        """The order-n table's n-grams as rows of word ids (the prefix chain unrolled)."""
        grams = np.arange(len(self.vocab))[:, None]
        for m in range(2, n + 1):
            grams = np.concatenate([grams[self.prefix[m - 2]], self.word[m - 2][:, None]], axis=1)
        return grams

    def save_arpa(self, path: str | Path) -> None:
        write_arpa(path, list(self.vocab), [(self.ngrams(n), self.logprob[n - 1], self.backoff[n - 1])
                                            for n in range(1, self.order + 1)])

    @classmethod
    def load_arpa(cls, path: str | Path) -> "NGramModel":
        vocab, tables = read_arpa(path)
        for special in (UNK, BOS, EOS):
            if special not in vocab:
                raise DataError(f"{path} has no {special} unigram: export the model with {special} in it")
        # Renumber so the specials take ids 0, 1, 2 as everywhere else here.
        vocab_out = (UNK, BOS, EOS) + tuple(w for w in vocab if w not in (UNK, BOS, EOS))
        remap = np.empty(len(vocab), np.int64)
        remap[[vocab.index(w) for w in vocab_out[:3]]] = np.arange(3)
        remap[[i for i, w in enumerate(vocab) if w not in (UNK, BOS, EOS)]] = np.arange(3, len(vocab))
        size = len(vocab_out)
        unigrams, logprob1, backoff1 = tables[0]
        logprob, backoff = [np.zeros(size, np.float32)], [np.zeros(size, np.float32)]
        logprob[0][remap[unigrams[:, 0]]], backoff[0][remap[unigrams[:, 0]]] = logprob1, backoff1
        prefixes, words, keys = [], [], [np.arange(size, dtype=np.int64)]
        for n, (grams, lp, bo) in enumerate(tables[1:], 2):
            grams = remap[grams]
            row = grams[:, 0]
            for j in range(1, n - 1):  # walk the prefix chain down the sorted tables
                at = np.searchsorted(keys[j], row * size + grams[:, j])
                found = at < len(keys[j])
                found[found] = keys[j][at[found]] == (row * size + grams[:, j])[found]
                if not found.all():
                    raise DataError(f"{path}: a {n}-gram's prefix is not among the {j + 1}-grams: the file is damaged")
                row = at
            key = row * size + grams[:, -1]
            order_rows = np.argsort(key, kind="stable")
            keys.append(key[order_rows])
            prefixes.append(row[order_rows])
            words.append(grams[order_rows, -1])
            logprob.append(lp[order_rows])
            backoff.append(bo[order_rows])
        return cls(vocab_out, tuple(prefixes), tuple(words), tuple(logprob), tuple(backoff))

    # -------------------------------------------------------------------------------------------------- queries
    def token_logprobs(self, lines: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Per token log10 probabilities of `lines` (flat, `</s>` included, `<s>` excluded) and sentence ids."""
        ids, pos = encode(lines, self.index)
        keep = pos >= 1
        return self.score_ids(ids, pos)[keep], (np.cumsum(pos == 0) - 1)[keep]

    def score_ids(self, ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """log10 p of each id given the ids before it in its sentence (`encode`'s output); 0 at each `<s>`.

        The ARPA back-off query, vectorised over all positions: order n looks up the n-gram ending at t only where
        the (n-1)-gram ending at t-1 was found (keyed on its slot), so each order searches fewer positions; the
        longest match's log10 p plus the backoffs of the longer contexts found gives each token's log10 p.
        """
        ids, pos = np.asarray(ids), np.asarray(pos)
        pos_next = np.append(pos[1:], -1)  # the next token's position in its sentence (-1 past the end)
        logp = np.zeros(len(ids), np.float32)
        at = np.flatnonzero(pos >= 1)  # positions with a context
        ctx = ids.take(at - 1).astype(np.int64)  # slot of the context: for order 2 the previous word's id
        logp[at] = self.logprob[0].take(ids.take(at))
        matched = np.ones(len(ids), np.int8)
        contexts = [(at, ctx, self.backoff[0])][: self.order - 1]  # per context length j: where, slot, backoffs
        for n, order in enumerate(self._hashed, 2):
            present, slot = _find(order, ctx * len(self.vocab) + ids.take(at))
            at = at.take(present)
            logp[at], matched[at] = order.logprob.take(slot), n
            if n < self.order:  # the n-grams found are the contexts of the order above, one position on
                on = np.flatnonzero(pos_next.take(at) >= n)
                at, ctx = at.take(on) + 1, slot.take(on)
                contexts.append((at, ctx, order.backoff))
        for j, (at, ctx, backoff) in enumerate(contexts, 1):  # contexts at least as long as the match backed off
            use = np.flatnonzero(matched.take(at) <= j)
            logp[at.take(use)] += backoff.take(ctx.take(use))
        return logp

    def sentence_logprob(self, lines: Sequence[str] | str) -> np.ndarray | float:
        """log10 P(sentence) including `</s>`; a list of sentences gives an array."""
        single = isinstance(lines, str)
        batch = [lines] if single else list(lines)
        logp, sentence = self.token_logprobs(batch)
        total = np.bincount(sentence, weights=logp.astype(np.float64), minlength=len(batch))
        return float(total[0]) if single else total

    def perplexity(self, lines: Sequence[str]) -> float:
        """10 ** (-mean log10 p) over every token and every `</s>` (PTB convention; OOVs scored as `<unk>`)."""
        logp, _ = self.token_logprobs(lines)
        if len(logp) == 0:
            raise DataError("no sentences to score: pass a non-empty text")
        return float(10.0 ** (-logp.astype(np.float64).mean()))

    def next_words(self, context: str, k: int = 10) -> list[tuple[str, float]]:
        """The k most probable next words after a sentence prefix, with log10 probabilities (no `<s>`)."""
        candidates = [w for w in self.vocab if w != BOS]
        lines = [f"{context} {w}" if w != EOS else context for w in candidates]
        logp, sentence = self.token_logprobs(lines)
        n = len(context.split()) + 1  # the candidate's position among each sentence's scored tokens
        last = logp[np.searchsorted(sentence, np.arange(len(lines))) + n - 1]
        top = np.argsort(-last, kind="stable")[:k]
        return [(candidates[i], float(last[i])) for i in top]

    def fill_blank(self, sentence: str, candidates: Iterable[str] | None = None,
                   k: int = 10) -> list[tuple[str, float]]:
        """Candidates for the `___` in `sentence`, ranked by log10 P of the whole completed sentence."""
        if sentence.split().count(BLANK) != 1:
            raise DataError(f"mark exactly one blank with {BLANK} in the sentence, e.g. 'the {BLANK} rose'")
        words = list(candidates) if candidates is not None else [w for w in self.vocab if w not in (BOS, EOS)]
        scores = self.sentence_logprob([" ".join(w if t == BLANK else t for t in sentence.split()) for w in words])
        top = np.argsort(-scores, kind="stable")[:k]
        return [(words[i], float(scores[i])) for i in top]

    def compare(self, first: str, second: str) -> tuple[str, float, float]:
        """The more probable of two sentences and both log10 probabilities."""
        a, b = self.sentence_logprob([first, second])
        return (first if a >= b else second), float(a), float(b)


# ----------------------------------------------------------------------------------------------------------- CLI

def _load(path: str) -> NGramModel:
    return NGramModel.load_arpa(path)


def _positive(k: int, flag: str = "-k") -> int:
    if k < 1:
        raise ConfigError(f"{flag}={k} is invalid: it must be >= 1 (how many words to list)")
    return k


def _words(path: str) -> list[str]:
    """The lines of a text file with at least one word: what `build` trains on and `ppl` scores."""
    lines = read_lines(path)
    if not any(line.split() for line in lines):
        raise DataError(f"{path} has no words (it is empty or blank): pass a text file, one sentence per line")
    return lines


def _output(path: str) -> str:
    """`path`, once its directory is known to exist (checked before any work)."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise DataError(f"cannot write {path}: directory {folder} does not exist (create it or choose another path)")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`lmjax ngram` (or `python -m lmjax.models.ngram`): build an ARPA model, then query it. Bad input exits 2
    with one line."""
    parser = argparse.ArgumentParser(prog="lmjax ngram", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="estimate a model from a text file (one sentence per line) and write ARPA")
    p.add_argument("train"), p.add_argument("arpa")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--smoothing", choices=("kneser_ney", "add_k"), default="kneser_ney")
    p.add_argument("--k", type=float, default=1.0, help="add-k's k (1 = Laplace)")
    p = sub.add_parser("score", help="log10 probability of each sentence")
    p.add_argument("arpa"), p.add_argument("sentences", nargs="+")
    p = sub.add_parser("ppl", help="perplexity of a file, counting </s>")
    p.add_argument("arpa"), p.add_argument("file")
    p = sub.add_parser("next", help="top-k next words after a sentence prefix")
    p.add_argument("arpa"), p.add_argument("context"), p.add_argument("-k", type=int, default=10)
    p = sub.add_parser("fill", help=f"rank words for the {BLANK} in a sentence by whole-sentence probability")
    p.add_argument("arpa"), p.add_argument("sentence"), p.add_argument("-k", type=int, default=10)
    p.add_argument("--candidates", help="comma-separated words (default: the whole vocabulary)")
    p = sub.add_parser("compare", help="which of two sentences is more probable")
    p.add_argument("arpa"), p.add_argument("first"), p.add_argument("second")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            out = _output(args.arpa)
            model = NGramModel.fit(_words(args.train), args.order, args.smoothing, args.k)
            model.save_arpa(out)
            print(f"wrote {args.arpa}: order {model.order}, vocabulary {len(model.vocab)}, "
                  f"{sum(len(x) for x in model.logprob)} n-grams")
        elif args.command == "score":
            for s, lp in zip(args.sentences, _load(args.arpa).sentence_logprob(args.sentences)):
                print(f"{lp:.4f}\t{s}")
        elif args.command == "ppl":
            lines = _words(args.file)
            print(f"perplexity {_load(args.arpa).perplexity(lines):.2f}")
        elif args.command == "next":
            for w, lp in _load(args.arpa).next_words(args.context, _positive(args.k)):
                print(f"{lp:.4f}\t{w}")
        elif args.command == "fill":
            candidates = args.candidates.split(",") if args.candidates else None
            for w, lp in _load(args.arpa).fill_blank(args.sentence, candidates, _positive(args.k)):
                print(f"{lp:.4f}\t{w}")
        else:
            best, a, b = _load(args.arpa).compare(args.first, args.second)
            print(f"{a:.4f}\t{args.first}\n{b:.4f}\t{args.second}\nmore probable: {best}")
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that exists but cannot be read or written (permissions, a directory, a full disk)
        print(f"error: {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
