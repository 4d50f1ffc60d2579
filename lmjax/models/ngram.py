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

**Scoring** is one jit-compiled function over a flat batch of sentences: per order, a hash table of (prefix row,
word) -> row (linear probing, one windowed gather per lookup) finds every n-gram ending at every position; the
longest match's probability plus the backoffs of the longer contexts gives each token's log10 probability.

CLI: `python -m lmjax.models.ngram {build,score,ppl,next,fill,compare} ...` (see `main`).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import sys
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lmjax.config import ConfigError
from lmjax.data.files import DataError
from lmjax.interop.arpa import read_arpa, write_arpa

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
BLANK = "___"


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


def encode(lines: Sequence[str], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Whitespace-split sentences -> flat ids `<s> w.. </s> <s> ..` and each token's position in its sentence.

    Unknown words become `<unk>`; a literal `<s>` or `</s>` inside a sentence is an error.
    """
    words = [line.split() for line in lines]
    lengths = np.fromiter(map(len, words), np.int64, len(words)) + 2
    flat = list(itertools.chain.from_iterable(words))
    ids = np.fromiter(map(index.get, flat, itertools.repeat(UNK_ID)), np.int32, len(flat))
    if np.any((ids == BOS_ID) | (ids == EOS_ID)):
        raise DataError(f"the text contains a literal {BOS} or {EOS}: remove them, sentence boundaries are lines")
    starts = np.cumsum(lengths) - lengths
    out = np.empty(int(lengths.sum()), np.int32)
    is_word = np.ones(len(out), bool)
    is_word[starts] = is_word[starts + lengths - 1] = False
    out[starts], out[starts + lengths - 1], out[is_word] = BOS_ID, EOS_ID, ids
    return out, (np.arange(len(out)) - np.repeat(starts, lengths)).astype(np.int32)


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

def _hash(prefix, word, mask: int):
    """Slot of (prefix, word) in a power-of-two table: multiplicative hashing in wrapping uint32 (NumPy or jnp)."""
    xp = jnp if isinstance(prefix, jax.Array) else np
    h = (prefix.astype(xp.uint32) * xp.uint32(0x9E3779B1)) ^ (word.astype(xp.uint32) * xp.uint32(0x85EBCA77))
    return ((h ^ (h >> 15)) & xp.uint32(mask)).astype(xp.int32)


def _hash_table(prefix: np.ndarray, word: np.ndarray) -> tuple[np.ndarray, int]:
    """Linear probing without wrap-around, placed in one pass: with rows sorted by home slot, row i lands at
    max(home_i, slot_i-1 + 1) = i + cummax(home_j - j), so a running maximum replaces the insertion loop.

    Returns [slots, 3] int32 rows (prefix, word, row; -1 where empty) at load <= 1/4, and the longest probe.
    """
    size = 1 << max(4, (4 * len(word)).bit_length())
    home = _hash(prefix, word, size - 1).astype(np.int64)
    by_home = np.argsort(home, kind="stable")
    rank = np.arange(len(word))
    slot = rank + np.maximum.accumulate(home[by_home] - rank) if len(word) else rank
    probes = int((slot - home[by_home]).max(initial=0)) + 1
    table = np.full((size + probes, 3), -1, np.int32)
    table[slot] = np.stack([prefix[by_home], word[by_home], by_home], axis=1)
    return table, probes


def _lookup(table: jax.Array, ctx: jax.Array, w: jax.Array, probes: int) -> jax.Array:
    """Row of the n-gram (context row ctx, word w), or -1: one windowed gather reads the `probes` (static) slots."""
    home = _hash(ctx, w, table.shape[0] - probes - 1)
    block = jax.vmap(lambda at: lax.dynamic_slice(table, (at, 0), (probes, 3)))(home)  # [N, probes, 3]
    hit = (block[..., 0] == ctx[:, None]) & (block[..., 1] == w[:, None])
    return jnp.where(ctx >= 0, jnp.max(jnp.where(hit, block[..., 2], -1), axis=1), -1)


@functools.partial(jax.jit, static_argnums=3)
def _token_logprobs(tables: dict, ids: jax.Array, pos: jax.Array, probes: tuple[int, ...]) -> jax.Array:
    """log10 p(ids[t] | its context) for every t with pos[t] >= 1 (0 elsewhere): the ARPA back-off query."""
    order = len(tables["logprob"])
    prev = lambda x: jnp.concatenate([jnp.full((1,), -1, x.dtype), x[:-1]])  # noqa: E731
    grams = [ids]  # grams[n-1][t]: row of the n-gram ending at t, or -1
    for n in range(2, order + 1):
        row = _lookup(tables["hash"][n - 2], prev(grams[-1]), ids, probes[n - 2])
        grams.append(jnp.where(pos >= n - 1, row, -1))
    take = lambda x, i: x.at[jnp.maximum(i, 0)].get(mode="promise_in_bounds")  # noqa: E731  (rows are < len)
    logp, matched = take(tables["logprob"][0], ids), jnp.ones_like(ids)
    for n in range(2, order + 1):
        found = grams[n - 1] >= 0
        logp = jnp.where(found, take(tables["logprob"][n - 1], grams[n - 1]), logp)
        matched = jnp.where(found, n, matched)
    for j in range(1, order):  # contexts at least as long as the match were backed off from
        ctx = prev(grams[j - 1])
        use = (ctx >= 0) & (j >= matched)
        logp = logp + jnp.where(use, take(tables["backoff"][j - 1], ctx), 0.0)
    return jnp.where(pos >= 1, logp, 0.0)


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
        return {w: i for i, w in enumerate(self.vocab)}

    @functools.cached_property
    def _device_tables(self) -> tuple[dict, tuple[int, ...]]:
        """Tables on device: per order >= 2 a hash table of (prefix row, word) -> row, and its probe count."""
        hashes, probes = zip(*(_hash_table(p, w) for p, w in zip(self.prefix, self.word))) if self.word else ((), ())
        padded = lambda xs: [jnp.asarray(np.append(x, np.float32(0))) for x in xs]  # noqa: E731  (row 0 exists)
        return {"hash": [jnp.asarray(h) for h in hashes], "logprob": padded(self.logprob),
                "backoff": padded(self.backoff)}, tuple(probes)

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
        index = {w: i for i, w in enumerate(vocab)}
        ids, pos = encode(lines, index)
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
        """log10 p of each id given the ids before it in its sentence (`encode`'s output); 0 at each `<s>`."""
        grain = 1 << max(7, len(ids).bit_length() - 3)  # 8 padded sizes per doubling: few distinct compilations
        pad = -len(ids) % grain
        tables, probes = self._device_tables
        logp = _token_logprobs(tables, jnp.asarray(np.pad(ids, (0, pad))),
                               jnp.asarray(np.pad(pos, (0, pad), constant_values=-1)), probes)
        return np.asarray(logp)[: len(ids)]

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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m lmjax.models.ngram`: build an ARPA model, then query it. Bad input exits 2 with one line."""
    parser = argparse.ArgumentParser(prog="python -m lmjax.models.ngram", description=__doc__.split("\n")[0])
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
            model = NGramModel.fit_file(args.train, args.order, args.smoothing, args.k)
            model.save_arpa(args.arpa)
            print(f"wrote {args.arpa}: order {model.order}, vocabulary {len(model.vocab)}, "
                  f"{sum(len(x) for x in model.logprob)} n-grams")
        elif args.command == "score":
            for s, lp in zip(args.sentences, _load(args.arpa).sentence_logprob(args.sentences)):
                print(f"{lp:.4f}\t{s}")
        elif args.command == "ppl":
            print(f"perplexity {_load(args.arpa).perplexity(read_lines(args.file)):.2f}")
        elif args.command == "next":
            for w, lp in _load(args.arpa).next_words(args.context, args.k):
                print(f"{lp:.4f}\t{w}")
        elif args.command == "fill":
            candidates = args.candidates.split(",") if args.candidates else None
            for w, lp in _load(args.arpa).fill_blank(args.sentence, candidates, args.k):
                print(f"{lp:.4f}\t{w}")
        else:
            best, a, b = _load(args.arpa).compare(args.first, args.second)
            print(f"{a:.4f}\t{args.first}\n{b:.4f}\t{args.second}\nmore probable: {best}")
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
