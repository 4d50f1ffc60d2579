"""word2vec (Mikolov et al. 2013): skip-gram and CBOW with negative sampling and/or hierarchical softmax, trained by
batched jit-compiled SGD.

Two tables of shape (V, d): input vectors W (the embeddings kept afterwards) and output vectors C. For an input
vector h and a target word t, negative sampling maximises

    log sigma(h . C[t]) + sum_k log sigma(-h . C[n_k]),   n_k ~ P(w) = count(w)^0.75 / Z,

by plain SGD with a learning rate decayed linearly from `alpha` to `min_alpha` over all training words. Skip-gram
takes h = W[center] and t = one context word; CBOW takes h = mean of W over the context words and t = the center.
Hierarchical softmax (`hs`) instead (or as well, both losses summed as word2vec.c does) walks the center's path in
word2vec's Huffman tree over the vocabulary, code bits c_j at inner nodes p_j with vectors S[p_j] (a third table,
(V - 1, d), zero at first), from h (CBOW) or, as word2vec.c's skip-gram, from each context's W row h:

    sum_j log sigma((1 - 2 c_j) h . S[p_j]).

Corpus side (NumPy, per epoch): frequent words are dropped with word2vec's probability 1 - keep(w),
keep(w) = (sqrt(f / (s T)) + 1) s T / f for a word seen f times out of T and sample s; each position draws its window
b uniformly from 1..window (the "dynamic window", which weights near contexts more) and pairs with the words at
distance <= b inside the same sentence.

Device side: a step takes B positions (a center and its window), shuffled across a chunk of the corpus, or with
`run = L > 0`, B / L runs of L consecutive positions at shuffled places of the chunk. A run arrives as its L + 2
window words (ids, sentence ids) and its positions' b; the device builds the windows, so the host only subsamples
and slices, and CBOW gathers and scatters each word of a run once instead of once per window it falls in (the
windows' means and the words' changes are products with a banded (L, L + 2 window) matrix per run): fewer random
memory accesses, 1.4x the positions/s on one CPU core at L = 16. Skip-gram on runs with shared negatives likewise
gathers and updates a run's output rows once (scores h X^T per run, masked to the valid (position, context) pairs)
instead of once per window. With
`shared_negatives = N > 0` the step shares one draw of N negatives, so the negative scores are one (B, d) x (d, N)
matrix product, each weighted by negative x (targets of the position) / N: the expected gradient of `negative`
private draws per target. With N = 0 each target draws its own `negative` words (the reference algorithm, gathers
and scatters only). A step's updates are applied together, one scatter-add per table, several steps per compiled
call (`lax.scan`). Summed updates of a frequent word grow with B: large batches diverge at word2vec's learning rate.

The SGD is derived by hand rather than taken from Optax because a step changes only the few thousand rows its
positions and negatives touch, one scatter-add per table, while an Optax transformation maps a dense gradient the
shape of each (V, d) table to a dense update (every step would build, scale and add V x d numbers), and because the
rule is word2vec.c's rather than the gradient of a loss (CBOW adds all of dh to every context row, not dh / n), with
a learning rate that decays per corpus word consumed, not per step.

Parallel training (`replicas = R > 1`): word2vec.c's and gensim's threads update one shared table without locks,
which XLA's functional arrays cannot. Instead R devices (on a CPU, `jax_num_cpu_devices` = cores) each hold a copy
of the tables and train on every R-th compiled call; every `merge_every` calls each, the copies merge by adding
their changes since the last merge: tables = base + sum_k (replica_k - base) (local SGD). Deterministic for a seed
and R.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.config import ConfigError
from lmjax.data import DataError
from lmjax.data.word_vectors import clean_text8, read_word2vec_format, write_word2vec_format

# ----------------------------------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Word2VecConfig:
    """Hyperparameters; defaults are word2vec's / gensim's except the batching fields, which are this design's."""

    sg: bool = True                # skip-gram (True) or CBOW (False)
    dim: int = 200
    window: int = 5
    negative: int = 5              # negatives per target; 0 turns negative sampling off (then hs must be on)
    hs: bool = False               # hierarchical softmax over word2vec's Huffman tree
    sample: float = 1e-3           # subsampling threshold s; 0 disables
    min_count: int = 5
    epochs: int = 5
    alpha: float = 0.025
    min_alpha: float = 1e-4
    batch_size: int = 256          # positions (a center and its window) per SGD step
    run: int = 0                   # L > 0: a step is batch_size / L runs of L consecutive positions, windows built
                                   # on the device; 0: batch_size independently shuffled positions
    shared_negatives: int = 32     # N negatives shared by a step's positions; 0: `negative` per target
    steps_per_call: int = 64       # SGD steps per compiled call
    replicas: int = 1              # R > 1: R devices train their own copy of the tables on alternate calls and
    merge_every: int = 8           # merge every `merge_every` calls each (local SGD); on CPU, a device per core
    chunk_words: int = 1_000_000   # corpus words turned into shuffled examples at a time
    seed: int = 0

    def __post_init__(self):
        for name in ("dim", "window", "min_count", "epochs", "batch_size", "steps_per_call", "chunk_words", "replicas",
                     "merge_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"word2vec {name} must be >= 1, got {getattr(self, name)}: set a positive value")
        if self.negative < 0 or self.shared_negatives < 0 or self.sample < 0 or not 0 < self.alpha:
            raise ConfigError("word2vec negative, shared_negatives and sample must be >= 0 and alpha > 0: fix the "
                              "value")
        if self.run < 0 or (self.run and self.batch_size % self.run):
            raise ConfigError(f"word2vec run={self.run} must be 0 or a divisor of batch_size={self.batch_size}")
        if not (self.hs or self.negative):
            raise ConfigError("word2vec needs an output layer: negative=0 with hs=False trains nothing; set "
                              "negative >= 1 (negative sampling) or hs=True (hierarchical softmax)")


# The batching fields of a design, as the benchmark writes it: batch_size:shared_negatives:steps_per_call:run:replicas:
# merge_every.
DESIGN_FIELDS = ("batch_size", "shared_negatives", "steps_per_call", "run", "replicas", "merge_every")

# The fastest design validated on each kind of machine (benchmarks/word2vec_vs_gensim.py, 3 seeds beside gensim at
# equal or better quality; RESULTS.md has the runs): key (machine, sg) -> (design, where it was measured). A CPU is
# named by lmjax.hardware's microarchitecture ("Zen 5": AMD family 26; "Zen 3": family 25 model 1, the hosts an
# issue called Zen 4); "gpu" when a CUDA plugin is installed.
VALIDATED_DESIGNS: dict[tuple[str, bool], tuple[str, str]] = {
    ("Zen 5", True): ("32:128:256:0:1:8", "experiments/results/word2vec_vs_gensim.json"),
    ("Zen 5", False): ("256:32:64:16:2:8", "experiments/results/word2vec_vs_gensim.json"),
    ("Zen 3", True): ("128:128:64:16:2:8", "benchmarks/results/word2vec_zen3_skipgram_128.json"),
    ("Zen 3", False): ("256:32:64:16:2:8", "experiments/results/word2vec_vs_gensim_zen3.json"),
    ("gpu", True): ("1024:128:16:0:1:8", "benchmarks/results/word2vec_gpu.json"),
    ("gpu", False): ("1024:32:16:16:1:8", "benchmarks/results/word2vec_gpu.json"),
}


def parse_design(design: str) -> dict[str, int]:
    """"B:N[:S[:L[:R[:M]]]]" -> the batching fields (steps 16, run 0, replicas 1, merge every 8 when left out)."""
    try:
        values = [int(v) for v in design.split(":")]
    except ValueError:
        values = []
    if not 2 <= len(values) <= len(DESIGN_FIELDS):
        raise ConfigError(f"word2vec design {design!r} is not B:N[:S[:L[:R[:M]]]] (batch_size:shared_negatives"
                          f"[:steps_per_call[:run[:replicas[:merge_every]]]]), e.g. 128:128:64:16:2:8")
    return dict(zip(DESIGN_FIELDS, values + [16, 0, 1, 8][len(values) - 2:]))


def format_design(cfg: Word2VecConfig) -> str:
    return ":".join(str(getattr(cfg, name)) for name in DESIGN_FIELDS)


def _machine() -> tuple[str | None, int]:
    """(the kind of machine VALIDATED_DESIGNS is keyed by, or None when it is not there; usable CPU cores),
    without starting JAX's backends (a CPU design's replicas must be set before they start)."""
    import importlib.util

    from lmjax.hardware import cpu_info

    cpu = cpu_info()
    on_gpu = "cpu" not in os.environ.get("JAX_PLATFORMS", "") and any(
        importlib.util.find_spec(name) for name in ("jax_cuda12_plugin", "jax_cuda13_plugin"))
    return ("gpu" if on_gpu else cpu.microarchitecture), cpu.cores


# Below this many vocabulary words the validated designs' large steps sum too many updates into the same rows and
# diverge (an 11-word corpus: NaN at 128:128:64); such a corpus trains in small one-device steps instead.
SMALL_VOCAB = 2000
SMALL_VOCAB_DESIGNS = {True: "32:128:256:0:1:8", False: "32:32:256:0:1:8"}


def default_design(sg: bool, machine: str | None = None, cores: int | None = None,
                   vocab_size: int | None = None) -> tuple[str, str]:
    """(design, why) for skip-gram (sg) or CBOW on this machine (or the one named): the validated design of its
    kind; elsewhere Zen 3's (both designs use two replicas) on two or more cores, or Zen 5's skip-gram design and
    one-replica CBOW on one core. A vocabulary under SMALL_VOCAB words gets small one-device steps."""
    if vocab_size is not None and vocab_size < SMALL_VOCAB:
        return SMALL_VOCAB_DESIGNS[sg], (f"small steps for a small vocabulary ({vocab_size} words < {SMALL_VOCAB}; "
                                         f"the validated designs are for corpora like IMDB's 39k words)")
    if machine is None:
        machine, found = _machine()
        cores = found if cores is None else cores
    if (machine, sg) in VALIDATED_DESIGNS:
        design, where = VALIDATED_DESIGNS[machine, sg]
        return design, f"the design validated on {machine} ({where})"
    if (cores or 1) >= 2:
        return VALIDATED_DESIGNS["Zen 3", sg][0], (f"no design is validated on {machine or 'this CPU'}: Zen 3's, "
                                                   f"which trains two replicas, one per core")
    design = VALIDATED_DESIGNS["Zen 5", True][0] if sg else "256:32:64:16:1:8"
    return design, f"no design is validated on {machine or 'this CPU'}: a one-device design for a single core"


# ------------------------------------------------------------------------------------------------------ vocabulary


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Words kept by min_count, most frequent first (ties by first appearance), with their counts."""

    words: tuple[str, ...]
    counts: np.ndarray  # int64, aligned with words

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_count: int = 5) -> Vocab:
        counter: Counter[str] = Counter()
        for sentence in sentences:
            counter.update(sentence)
        if not counter:
            raise DataError("the corpus is empty: pass sentences with at least one word")
        kept = [(w, c) for w, c in counter.most_common() if c >= min_count]
        if not kept:
            raise DataError(f"min_count={min_count} removed every word (the most frequent occurs "
                            f"{counter.most_common(1)[0][1]} times): lower min_count or use a larger corpus")
        return cls(tuple(w for w, _ in kept), np.array([c for _, c in kept], np.int64))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def encode(self, sentences: Iterable[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """(ids, sentence id per token) of the in-vocabulary tokens, as word2vec drops unknown words before windows."""
        index, ids, sids = self.index, [], []
        for s, sentence in enumerate(sentences):
            row = [i for i in map(index.get, sentence) if i is not None]
            ids += row
            sids += [s] * len(row)
        return np.array(ids, np.int32), np.array(sids, np.int32)


def keep_probability(counts: np.ndarray, sample: float) -> np.ndarray:
    """word2vec's subsampling: keep(w) = (sqrt(f / (s T)) + 1) s T / f, capped at 1 (1 everywhere when s = 0)."""
    if sample == 0:
        return np.ones(len(counts))
    threshold = sample * counts.sum()
    return np.minimum(1.0, (np.sqrt(counts / threshold) + 1) * threshold / counts)


def noise_distribution(counts: np.ndarray, power: float = 0.75) -> np.ndarray:
    """The negative-sampling distribution P(w) = count(w)^0.75 / sum_v count(v)^0.75."""
    weights = counts.astype(np.float64) ** power
    return weights / weights.sum()


def huffman_tree(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """word2vec's Huffman tree over V words: (codes (V, L) int8, points (V, L) int32, mask (V, L) bool), L the
    longest code; row w lists root first the inner nodes p_j (0..V-2, root V-2) on w's path and the bits c_j taken.

    word2vec.c's CreateBinaryTree: a linear two-queue merge (leaves by ascending count, for a vocabulary sorted by
    descending count the last word first; inner nodes in creation order), inner node i made by the i-th merge of the
    two smallest nodes, bit 0 to the first, 1 to the second; on equal counts the inner node goes first. gensim's
    heap breaks ties by heap order instead: the same tree when no counts tie, an equally short code otherwise.
    """
    V = len(counts)
    leaves = np.lexsort((-np.arange(V), counts)).tolist()
    size = [int(c) for c in counts] + [0] * (V - 1)
    parent, bit = [2 * V - 2] * (2 * V - 1), [0] * (2 * V - 1)
    leaf, inner = 0, V
    for node in range(V, 2 * V - 1):
        for side in (0, 1):
            if leaf < V and (inner == node or size[leaves[leaf]] < size[inner]):
                child, leaf = leaves[leaf], leaf + 1
            else:
                child, inner = inner, inner + 1
            parent[child], bit[child] = node, side
            size[node] += size[child]
    parent, bit = np.array(parent), np.array(bit, np.int8)
    up_codes, up_points, node = [], [], np.arange(V)
    while (active := node < 2 * V - 2).any():  # walk every leaf up to the root, bits in leaf-to-root order
        up_codes.append(np.where(active, bit[node], 0))
        up_points.append(np.where(active, parent[node] - V, -1))
        node = np.where(active, parent[node], node)
    L = max(1, len(up_points))  # one word: no inner node, an empty (masked) code
    up_codes, up_points = (np.array(a).reshape(-1, V) for a in (up_codes, up_points))
    length = (up_points >= 0).sum(0)
    codes, points, mask = np.zeros((V, L), np.int8), np.zeros((V, L), np.int32), np.arange(L) < length[:, None]
    rows, steps = np.nonzero(mask)
    codes[rows, length[rows] - 1 - steps] = up_codes[steps, rows]
    points[rows, length[rows] - 1 - steps] = up_points[steps, rows]
    return codes, points, mask


# -------------------------------------------------------------------------------------------------- examples (host)


def window_examples(ids: np.ndarray, sids: np.ndarray, window: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Contexts of every position under a dynamic window: (contexts (n, 2 window) int32, valid mask (n, 2 window)).

    Column j < window holds the word at distance window - j to the left, column window + j the word at distance
    j + 1 to the right; a column is valid when its distance <= b (b ~ U{1..window} per position) and it lies in the
    same sentence.
    """
    n = len(ids)
    reach = rng.integers(1, window + 1, n)
    contexts = np.zeros((n, 2 * window), np.int32)
    valid = np.zeros((n, 2 * window), bool)
    for d in range(1, min(window, n - 1) + 1):
        same = sids[d:] == sids[:-d]
        left, right = window - d, window + d - 1
        contexts[d:, left], valid[d:, left] = ids[:-d], same & (reach[d:] >= d)
        contexts[:-d, right], valid[:-d, right] = ids[d:], same & (reach[:-d] >= d)
    return contexts, valid


def _subsampled_chunks(ids: np.ndarray, sids: np.ndarray, keep: np.ndarray, cfg: Word2VecConfig,
                       rng: np.random.Generator):
    """Yield (raw words consumed, kept ids, their sentence ids) per `chunk_words` of the corpus, after subsampling."""
    for start in range(0, len(ids), cfg.chunk_words):
        raw = min(cfg.chunk_words, len(ids) - start)
        chunk, chunk_s = ids[start:start + raw], sids[start:start + raw]
        kept = rng.random(raw, np.float32) < keep[chunk]
        yield raw, chunk[kept], chunk_s[kept]


def epoch_chunks(ids: np.ndarray, sids: np.ndarray, keep: np.ndarray, cfg: Word2VecConfig,
                 rng: np.random.Generator):
    """Yield (raw words consumed, centers, contexts, weights) per chunk: positions with at least one context, in
    shuffled order, padded with weight-0 rows to whole compiled calls.

    One example per position for both algorithms (shuffling positions, not pairs, keeps the host cheap): centers
    (n,), contexts (n, 2 window), weights (n, 2 window): skip-gram 1 on valid columns (one pair each), CBOW
    1 / (number of valid columns) there (the mean). Invalid columns have weight 0.
    """
    per_call = cfg.batch_size * cfg.steps_per_call
    for raw, chunk, chunk_s in _subsampled_chunks(ids, sids, keep, cfg, rng):
        contexts, valid = window_examples(chunk, chunk_s, cfg.window, rng)
        count = valid.sum(1, dtype=np.int32)
        order = rng.permutation(np.flatnonzero(count))
        weights = valid[order].astype(np.float32)
        if not cfg.sg:
            weights /= count[order, None]
        pad = -len(order) % per_call
        yield raw, *(np.concatenate([a, np.zeros((pad, *a.shape[1:]), a.dtype)])
                     for a in (chunk[order], contexts[order], weights))


def epoch_runs(ids: np.ndarray, sids: np.ndarray, keep: np.ndarray, cfg: Word2VecConfig, rng: np.random.Generator):
    """Yield (raw words consumed, tokens, sentence ids, reach) per chunk for `cfg.run = L`: the subsampled chunk cut
    into runs of L positions in shuffled order, each as its words with `window` more on either side (tokens and
    sentence ids (n_runs, L + 2 window); -1 sentence ids outside the chunk) and its positions' b (reach (n_runs, L),
    0 for padding); padded with empty runs to whole compiled calls."""
    L, w = cfg.run, cfg.window
    per_call = cfg.batch_size // L * cfg.steps_per_call
    for raw, chunk, chunk_s in _subsampled_chunks(ids, sids, keep, cfg, rng):
        n = len(chunk)
        runs = -(-n // L)
        size = (runs + 1) * L + 3 * w  # the chunk at offset w, then padding, where the empty runs start
        tokens, sentence, reach = np.zeros(size, np.int32), np.full(size, -1, np.int32), np.zeros(size, np.int32)
        tokens[w:w + n], sentence[w:w + n] = chunk, chunk_s
        reach[w:w + n] = rng.integers(1, w + 1, n)
        starts = np.concatenate([rng.permutation(runs) * L, np.full(-runs % per_call, runs * L + w)])
        span = starts[:, None] + np.arange(L + 2 * w)
        yield raw, tokens[span], sentence[span], reach[span[:, w:w + L]]


# -------------------------------------------------------------------------------------------------- SGD (device)


def _column_starts(window: int) -> list[int]:
    """Within a run's words (window padding first), where column c's context of the run's positions begins: column
    c < window lies window - c to the left, column window + j lies j + 1 to the right (window_examples' layout)."""
    return [c if c < window else c + 1 for c in range(2 * window)]


@functools.lru_cache(maxsize=8)
def _run_band(L: int, window: int) -> np.ndarray:
    """E (L, L + 2 window, 2 window): E[i, j, c] = 1 where run word j is column c of position i's window."""
    band = np.zeros((L, L + 2 * window, 2 * window), np.float32)
    for c, start in enumerate(_column_starts(window)):
        band[np.arange(L), np.arange(L) + start, c] = 1
    return band


def run_windows(tokens, sentence, reach, window: int):
    """Device twin of window_examples for runs: tokens, sentence (G, L + 2 window), reach (G, L) -> centers (G L,),
    contexts (G L, 2 window), valid (G L, 2 window) bool."""
    G, L = reach.shape
    center_s = sentence[:, window:window + L]
    contexts, valid = [], []
    for c, start in enumerate(_column_starts(window)):
        distance = window - c if c < window else c - window + 1
        contexts.append(tokens[:, start:start + L])
        valid.append((sentence[:, start:start + L] == center_s) & (center_s >= 0) & (reach >= distance))
    return (tokens[:, window:window + L].reshape(-1), jnp.stack(contexts, -1).reshape(G * L, -1),
            jnp.stack(valid, -1).reshape(G * L, -1))


# Every index a step scatters to is a word id (< V) or a tree node (< V - 1): promising XLA they are in bounds drops
# its per-index bounds check, which cost XLA's CPU scatter about 1.6x (448 rows of 200 floats: 276 -> 171 us).
_IN_BOUNDS = "promise_in_bounds"


def _negative_sampling(C, h, targets, mask, lr, negs, cfg: Word2VecConfig):
    """Negative sampling's ascent step for inputs h (B, d) and targets (B, T) with mask m: (new C, dh, summed loss).

    With g_t = lr m_t (1 - sigma(h . C[t])) for the targets and g_k = -lr w_k sigma(h . C[n_k]) for the negatives,
    dh = sum_t g_t C[t] + sum_k g_k C[n_k], dC[t] = g_t h, dC[n_k] = g_k h. Shared negatives: N draws for the whole
    step, w_k = negative x (number of targets) / N, less the draws equal to a target; otherwise `negative` draws per
    target, w_k = 1 unless equal to it. `negs` are the draws: (N,) shared, (B, T, K) per target.
    """
    out = C[targets]                                                  # (B, T, d)
    pos = jnp.einsum("bd,btd->bt", h, out)
    g = lr * mask * jax.nn.sigmoid(-pos)
    loss = -jnp.sum(mask * jax.nn.log_sigmoid(pos))
    dh = jnp.einsum("bt,btd->bd", g, out)
    if cfg.shared_negatives:
        hits = jnp.einsum("bt,btn->bn", mask, (targets[..., None] != negs).astype(h.dtype))
        dh_neg, d_neg, loss_neg = _shared_negatives(C, h, hits, lr, negs, cfg)
        dh, loss = dh + dh_neg, loss + loss_neg
    else:
        neg_vecs = C[negs]                                            # (B, T, K, d)
        scores = jnp.einsum("bd,btkd->btk", h, neg_vecs)
        w = mask[..., None] * (negs != targets[..., None])
        gn = -lr * w * jax.nn.sigmoid(scores)
        dh += jnp.einsum("btk,btkd->bd", gn, neg_vecs)
        d_neg = (gn[..., None] * h[:, None, None]).reshape(-1, h.shape[1])
        loss -= jnp.sum(w * jax.nn.log_sigmoid(-scores))
    rows = jnp.concatenate([targets.reshape(-1), negs.reshape(-1)])
    updates = jnp.concatenate([(g[..., None] * h[:, None]).reshape(-1, h.shape[1]), d_neg])
    C = C.at[rows].add(updates, mode=_IN_BOUNDS)
    return C, dh, loss


def _negative_sampling_runs(C, h, tokens, valid, lr, negs, cfg: Word2VecConfig):
    """Skip-gram's negative sampling on runs with shared negatives: _negative_sampling's step for the same pairs,
    with each run's output rows X = C[tokens] (G, L + 2 window, d) gathered and updated once instead of once per
    window they fall in. h (G, L, d) are the run positions' input vectors, valid (G, L, 2 window) their windows'
    valid columns, and M (G, L, L + 2 window) the mask of (position i, run word j) pairs, 1 where j is a valid
    context of i: the scores are h X^T per run, dh = g X and
    dX = g^T h with g = lr M sigma(-h X^T), and a negative's weight counts the targets it differs from, sum_j M_ij
    [tokens_j != n_k], as the explicit windows' does. Returns (new C, dh (G, L, d), summed loss).
    """
    M = jnp.einsum("gic,ijc->gij", valid.astype(h.dtype), _run_band(h.shape[1], cfg.window))
    X = C[tokens]                                                     # (G, L + 2 window, d)
    pos = jnp.einsum("gid,gjd->gij", h, X)
    g = lr * M * jax.nn.sigmoid(-pos)
    loss = -jnp.sum(M * jax.nn.log_sigmoid(pos))
    dh = jnp.einsum("gij,gjd->gid", g, X)
    dX = jnp.einsum("gij,gid->gjd", g, h)
    flat = h.reshape(-1, h.shape[-1])
    hits = jnp.einsum("gij,gjn->gin", M, (tokens[..., None] != negs).astype(h.dtype)).reshape(len(flat), -1)
    dh_neg, d_neg, loss_neg = _shared_negatives(C, flat, hits, lr, negs, cfg)
    rows = jnp.concatenate([tokens.reshape(-1), negs])
    C = C.at[rows].add(jnp.concatenate([dX.reshape(-1, h.shape[-1]), d_neg]), mode=_IN_BOUNDS)
    return C, dh + dh_neg.reshape(h.shape), loss + loss_neg


def _shared_negatives(C, h, hits, lr, negs, cfg: Word2VecConfig):
    """The N shared negatives' part of a step for inputs h (B, d), hits (B, N) the number of a position's targets
    each draw differs from: (dh (B, d), the negatives' row changes (N, d), their loss), with the weights
    w = negative x hits / N and g = -lr w sigma(h . C[n_k])."""
    neg_vecs = C[negs]                                                # (N, d)
    scores = h @ neg_vecs.T                                           # (B, N): the one matmul
    w = (cfg.negative / cfg.shared_negatives) * hits
    gn = -lr * w * jax.nn.sigmoid(scores)
    return gn @ neg_vecs, gn.T @ h, -jnp.sum(w * jax.nn.log_sigmoid(-scores))


def _hierarchical_softmax(S, h, mask, centers, lr, tree):
    """Hierarchical softmax's ascent step for inputs h (B, T, d) with mask (B, T), each predicting its position's
    center: (new S, dh (B, T, d), summed loss).

    For the inner nodes p_j on the center's path with bits c_j (codes padded to L, masked), f = sigma(h . S[p_j]) and
    g = lr m (1 - c_j - f) (word2vec.c's sign convention): dh = sum_j g S[p_j], dS[p_j] = sum g h; the loss is
    -log sigma((1 - 2 c_j) h . S[p_j]). Unlike word2vec.c no update is skipped at |h . S[p_j]| >= 6.
    """
    codes, points, valid = (a[centers] for a in tree)                # (B, L)
    nodes = S[points]                                                 # (B, L, d)
    x = jnp.einsum("btd,bld->btl", h, nodes)
    m = mask[..., None] * valid[:, None]
    g = lr * m * (1 - codes[:, None] - jax.nn.sigmoid(x))
    loss = -jnp.sum(m * jax.nn.log_sigmoid((1 - 2 * codes[:, None]) * x))
    S = S.at[points.reshape(-1)].add(jnp.einsum("btl,btd->bld", g, h).reshape(-1, h.shape[-1]), mode=_IN_BOUNDS)
    return S, jnp.einsum("btl,bld->btd", g, nodes), loss


def _sgd_step(tables, batch, tree, cfg: Word2VecConfig):
    """One SGD step on B positions: new tables {"W", "C" (negative sampling), "S" (hs)} and the summed loss.

    Negative sampling: each position gives an input vector h and targets t with mask m: skip-gram h = W[center],
    t = its contexts; CBOW h = mean of W[contexts], t = the center. Hierarchical softmax always walks the center's
    path, from h (CBOW) or, as word2vec.c's skip-gram does, from each context's W row (the T pairs of a position then
    share one path: T times fewer S rows to gather and update). With both on (CBOW: the same h), the dh add up as in
    word2vec.c; dh goes to the input rows of W (CBOW: to each context row whole, as in word2vec.c).
    """
    W = tables["W"]
    if cfg.run:  # runs: windows built here
        tokens, sentence, reach, lr, negs = batch
        centers, contexts, valid = run_windows(tokens, sentence, reach, cfg.window)
        weights = valid.astype(W.dtype) if cfg.sg else valid / jnp.maximum(valid.sum(1, keepdims=True), 1)
        G, L = reach.shape
        band = _run_band(L, cfg.window)                               # (L, L + 2 window, 2 window) one-hot
    else:
        centers, contexts, weights, lr, negs = batch
    if cfg.sg:
        h, targets, mask = W[centers], contexts, weights
        examples = jnp.sum(weights > 0)
    else:  # weights are 1 / n_contexts on valid columns: h is the mean of the context vectors
        if cfg.run:  # a run's rows X are gathered once; h_i = sum_c weight_ic X[i + start_c], a banded product
            X = W[tokens]                                             # (G, L + 2 window, d)
            h = jnp.einsum("gij,gjd->gid", jnp.einsum("gic,ijc->gij", weights.reshape(G, L, -1), band), X)
            h = h.reshape(G * L, -1)
        else:
            h = jnp.einsum("bc,bcd->bd", weights, W[contexts])
        targets, mask = centers[:, None], (weights.sum(1, keepdims=True) > 0).astype(W.dtype)
        examples = jnp.sum(mask)
    tables, dh, loss = dict(tables), 0.0, 0.0
    if cfg.negative and cfg.sg and cfg.run and cfg.shared_negatives:  # output rows once per run
        tables["C"], dh, loss = _negative_sampling_runs(tables["C"], h.reshape(G, L, -1), tokens,
                                                        valid.reshape(G, L, -1), lr, negs, cfg)
        dh = dh.reshape(G * L, -1)
    elif cfg.negative:
        tables["C"], dh, loss = _negative_sampling(tables["C"], h, targets, mask, lr, negs, cfg)
    if cfg.hs:
        inputs = (W[contexts], weights) if cfg.sg else (h[:, None], mask)
        tables["S"], dh_hs, loss_hs = _hierarchical_softmax(tables["S"], *inputs, centers, lr, tree)
        loss += loss_hs
        if cfg.sg:
            W = W.at[contexts.reshape(-1)].add(dh_hs.reshape(-1, W.shape[1]), mode=_IN_BOUNDS)  # invalid columns: g = 0
        else:
            dh += dh_hs[:, 0]
    if cfg.sg:
        tables["W"] = W.at[centers].add(dh, mode=_IN_BOUNDS) if cfg.negative else W
    elif cfg.run:  # run word j gets dh_i of every window i it is valid in: the transposed band of the valid columns
        dX = jnp.einsum("gij,gid->gjd", jnp.einsum("gic,ijc->gij", valid.reshape(G, L, -1).astype(dh.dtype), band),
                        dh.reshape(G, L, -1))
        tables["W"] = W.at[tokens.reshape(-1)].add(dX.reshape(-1, dX.shape[-1]), mode=_IN_BOUNDS)
    else:  # as word2vec.c and gensim (cbow_mean=1) do: every context row gets all of dh, not dh / n_contexts
        tables["W"] = W.at[contexts.reshape(-1)].add(((weights > 0)[..., None] * dh[:, None]).reshape(-1, dh.shape[1]),
                                                    mode=_IN_BOUNDS)
    return tables, (loss, examples)


@functools.lru_cache(maxsize=8)
def make_train_call(cfg: Word2VecConfig):
    """A jitted call running `steps_per_call` SGD steps (lax.scan) on stacked batches; tables donated. `aux` is
    (noise cdf or None, (codes, points, mask) of the Huffman tree or None)."""

    def call(tables, aux, inputs, lrs, key):
        """inputs: (centers, contexts, weights) per step, or with runs (tokens, sentence ids, reach)."""
        cdf, tree = aux
        negs = jnp.zeros((len(lrs), 0), jnp.int32)
        if cfg.negative:  # every step's draws at once: one vectorised search instead of a loop per step
            targets = (cfg.batch_size, 2 * cfg.window if cfg.sg else 1)
            shape = (cfg.shared_negatives,) if cfg.shared_negatives else (*targets, cfg.negative)
            negs = jnp.searchsorted(cdf, jax.random.uniform(key, (len(lrs), *shape)), side="right")
        tables, (losses, examples) = jax.lax.scan(lambda t, b: _sgd_step(t, b, tree, cfg), tables, (*inputs, lrs, negs))
        return tables, losses.sum(), examples.sum()

    return jax.jit(call, donate_argnums=0)


# ------------------------------------------------------------------------------------------------------- training


@dataclasses.dataclass
class Word2Vec:
    """Trained vectors: `vocab` and the input table `vectors` (V, d) as NumPy, plus query helpers."""

    vocab: Vocab
    vectors: np.ndarray
    log: list[dict] = dataclasses.field(default_factory=list)

    @property
    def words(self) -> tuple[str, ...]:
        return self.vocab.words

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return self.vocab.index

    def id(self, word: str) -> int:
        index = self.index
        if word not in index:
            raise KeyError(f"word {word!r} is not in the vocabulary ({len(self.vocab)} words, min_count applied): "
                           f"check the spelling and case, or retrain with a lower min_count")
        return index[word]

    @functools.cached_property
    def unit(self) -> np.ndarray:
        """Vectors scaled to unit length (cosine similarity is a dot product)."""
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        return self.vectors / np.maximum(norms, 1e-12)

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two words."""
        u = self.unit
        return float(u[self.id(a)] @ u[self.id(b)])

    def most_similar(self, positive: Sequence[str], negative: Sequence[str] = (), topn: int = 10,
                     restrict: int | None = None) -> list[tuple[str, float]]:
        """3CosAdd: words nearest (cosine) to sum(unit(positive)) - sum(unit(negative)), query words excluded."""
        u = self.unit[:restrict]
        query = sum(u[self.id(w)] for w in positive) - sum((u[self.id(w)] for w in negative), np.zeros(u.shape[1]))
        scores = u @ query / max(np.linalg.norm(query), 1e-12)
        scores[[self.id(w) for w in (*positive, *negative) if self.id(w) < len(u)]] = -np.inf
        best = np.argsort(-scores)[:topn]
        return [(self.words[i], float(scores[i])) for i in best]

    def analogy(self, a: str, b: str, c: str, topn: int = 1) -> list[tuple[str, float]]:
        """"a is to b as c is to ?": the nearest words to b - a + c."""
        return self.most_similar([b, c], [a], topn)


def train(sentences: Sequence[Sequence[str]], cfg: Word2VecConfig = Word2VecConfig(), *,
          vocab: Vocab | None = None, verbose: bool = False) -> Word2Vec:
    """Train on sentences of word strings (a sentence never shares a window with the next)."""
    vocab = vocab or Vocab.build(sentences, cfg.min_count)
    ids, sids = vocab.encode(sentences)
    rng = np.random.default_rng(cfg.seed)
    key = jax.random.PRNGKey(cfg.seed)
    # word2vec's initialisation: W uniform in +-0.5/d, output tables (C, and S for the V - 1 inner nodes) zero.
    tables = {"W": jnp.asarray(((rng.random((len(vocab), cfg.dim)) - 0.5) / cfg.dim).astype(np.float32))}
    cdf = tree = None
    if cfg.negative:
        tables["C"] = jnp.zeros((len(vocab), cfg.dim), jnp.float32)
        cdf = jnp.asarray(np.cumsum(noise_distribution(vocab.counts)).astype(np.float32)[:-1])
    if cfg.hs:
        codes, points, mask = huffman_tree(vocab.counts)
        tables["S"] = jnp.zeros((max(1, len(vocab) - 1), cfg.dim), jnp.float32)
        tree = (jnp.asarray(codes, jnp.float32), jnp.asarray(points), jnp.asarray(mask, jnp.float32))
    keep = keep_probability(vocab.counts, cfg.sample)
    call, replicas = make_train_call(cfg), _Replicas(tables, (cdf, tree), cfg)
    total, done, log, t0 = cfg.epochs * len(ids), 0, [], time.perf_counter()
    S, B = cfg.steps_per_call, cfg.batch_size
    per_step = B // cfg.run if cfg.run else B  # runs or positions
    chunks = epoch_runs if cfg.run else epoch_chunks
    for epoch in range(cfg.epochs):
        losses, counts = [], []
        for raw, *arrays in chunks(ids, sids, keep, cfg, rng):
            calls = len(arrays[0]) // (S * per_step)
            # learning rate decays linearly in words consumed, spread evenly over this chunk's steps
            frac = (done + raw * (np.arange(calls * S) + 0.5) / (calls * S)) / total
            lrs = np.maximum(cfg.min_alpha, cfg.alpha - (cfg.alpha - cfg.min_alpha) * frac).astype(np.float32)
            for i in range(calls):
                part = slice(i * S * per_step, (i + 1) * S * per_step)
                key, sub = jax.random.split(key)
                inputs = tuple(a[part].reshape(S, per_step, *a.shape[1:]) for a in arrays)
                loss, count = replicas.call(call, inputs, lrs[i * S:(i + 1) * S], sub)
                losses.append(loss)
                counts.append(count)
            done += raw
        examples = int(sum(jax.device_get(counts)))
        loss = float(sum(jax.device_get(losses))) / max(examples, 1)
        if not np.isfinite(loss):
            raise ConfigError(f"word2vec diverged in epoch {epoch + 1} (loss {loss}) with design {format_design(cfg)} "
                              f"and alpha={cfg.alpha} on {len(vocab)} words: use smaller steps (batch_size, "
                              f"shared_negatives), replicas=1 or a lower alpha")
        log.append({"epoch": epoch + 1, "loss_per_example": loss, "examples": examples,
                    "seconds": time.perf_counter() - t0})
        if verbose:
            print(f"epoch {epoch + 1}: loss/example {loss:.4f}, {examples:,} examples, "
                  f"{done / (time.perf_counter() - t0):,.0f} words/s", file=sys.stderr)
    return Word2Vec(vocab, np.asarray(jax.device_get(replicas.merged()["W"])), log)


class _Replicas:
    """The tables' copies on `cfg.replicas` devices: call n trains copy n mod R; every R x merge_every calls (and at
    the end) the copies merge, tables = base + sum_k (copy_k - base), base being the tables of the last merge."""

    def __init__(self, tables: dict, aux, cfg: Word2VecConfig):
        devices = jax.local_devices()
        if cfg.replicas > len(devices):
            raise ConfigError(f"word2vec replicas={cfg.replicas} needs as many devices, JAX sees {len(devices)}: on a "
                              f"CPU call jax.config.update('jax_num_cpu_devices', {cfg.replicas}) before any JAX "
                              f"computation (the CLI does it for --replicas), or set replicas=1")
        self.devices, self.every, self.n = devices[:cfg.replicas], cfg.replicas * cfg.merge_every, 0
        self.tables = [jax.device_put(tables, d) for d in self.devices]
        self.aux = [jax.device_put(aux, d) for d in self.devices]
        self.base = jax.tree_util.tree_map(jnp.copy, self.tables[0]) if cfg.replicas > 1 else None

    def call(self, call, inputs, lrs, key):
        k = self.n % len(self.devices)
        put = functools.partial(jax.device_put, device=self.devices[k])
        self.tables[k], loss, count = call(self.tables[k], self.aux[k], put(inputs), put(lrs), put(key))
        self.n += 1
        if self.base is not None and self.n % self.every == 0:
            self._merge()
        return loss, count

    def _merge(self) -> None:
        first, others = self.tables[0], [jax.device_put(t, self.devices[0]) for t in self.tables[1:]]
        new, self.base = _merge_replicas(first, others, self.base)
        self.tables = [new] + [jax.device_put(new, d) for d in self.devices[1:]]

    def merged(self) -> dict:
        if self.base is not None and self.n % self.every:
            self._merge()
        return self.tables[0]


@functools.partial(jax.jit, donate_argnums=(0, 2))
def _merge_replicas(first: dict, others: list[dict], base: dict) -> tuple[dict, dict]:
    """(first + sum_k (others_k - base), a second copy of it: the next base)."""
    new = jax.tree_util.tree_map(lambda a, b, *o: a + sum(x - b for x in o), first, base, *others)
    return new, jax.tree_util.tree_map(lambda x: x + 0, new)


# ----------------------------------------------------------------------------------------------------- evaluation


def evaluate_analogies(model: Word2Vec, sections: dict[str, list[tuple[str, str, str, str]]],
                       restrict: int = 30_000) -> dict[str, float]:
    """3CosAdd accuracy on questions whose four words (lower-cased) are in the `restrict` most frequent words.

    Returns per-section accuracies, "total", and "coverage" (fraction of all questions evaluated), like gensim's
    evaluate_word_analogies(restrict_vocab=restrict).
    """
    index = {w: i for i, w in enumerate(model.words[:restrict])}
    u = model.unit[:restrict]
    result, correct_all, seen_all, asked = {}, 0, 0, 0
    for section, questions in sections.items():
        asked += len(questions)
        q = np.array([[index.get(w.lower(), -1) for w in question] for question in questions]).reshape(-1, 4)
        q = q[(q >= 0).all(1)]
        if not len(q):
            continue
        correct = 0
        for part in np.array_split(q, max(1, len(q) // 2048)):
            scores = (u[part[:, 1]] - u[part[:, 0]] + u[part[:, 2]]) @ u.T
            np.put_along_axis(scores, part[:, :3], -np.inf, axis=1)
            correct += int((scores.argmax(1) == part[:, 3]).sum())
        result[section] = correct / len(q)
        correct_all, seen_all = correct_all + correct, seen_all + len(q)
    result["total"] = correct_all / max(seen_all, 1)
    result["coverage"] = seen_all / max(asked, 1)
    return result


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (for Spearman's rho)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, ranks)
    return sums[inverse] / counts[inverse]


def evaluate_word_pairs(model: Word2Vec, pairs: Sequence[tuple[str, str, float]]) -> dict[str, float]:
    """Spearman correlation of cosine similarity with human scores over pairs with both words known (lower-cased)."""
    index = model.index
    known = [(index[a.lower()], index[b.lower()], s) for a, b, s in pairs if a.lower() in index and b.lower() in index]
    if len(known) < 2:
        return {"spearman": float("nan"), "coverage": len(known) / max(len(pairs), 1)}
    a, b, human = map(np.array, zip(*known))
    u = model.unit
    cos = np.einsum("nd,nd->n", u[a], u[b])
    rho = np.corrcoef(_ranks(cos), _ranks(human))[0, 1]
    return {"spearman": float(rho), "coverage": len(known) / len(pairs)}


# -------------------------------------------------------------------------------------------------------- formats


def save_word2vec_format(model: Word2Vec, path: str | Path, binary: bool = False) -> None:
    """word2vec's C format (`lmjax.data.word_vectors`), text or binary."""
    write_word2vec_format(model.words, model.vectors, path, binary=binary)


def load_word2vec_format(path: str | Path, binary: bool | None = None) -> Word2Vec:
    """Read either format (binary guessed from the bytes when not given); counts become a rank proxy V..1."""
    words, vectors = read_word2vec_format(path, binary)
    return Word2Vec(Vocab(tuple(words), np.arange(len(words), 0, -1)), vectors)


# ---------------------------------------------------------------------------------------------------------- corpora


def load_corpus(name: str = "imdb", data_dir: str | None = None) -> list[list[str]]:
    """Sentences of cleaned words: "imdb" (train + test reviews, one sentence each), "text8" (downloaded, split
    into 10,000-word sentences as gensim's Text8Corpus does) or a path to a text file (one sentence per line)."""
    if name == "imdb":
        from lmjax.data import load_text

        text = load_text("imdb", "train", data_dir=data_dir) + load_text("imdb", "test", data_dir=data_dir)
        return [clean_text8(line) for line in text.splitlines() if line.strip()]
    if name == "text8":
        import io
        import urllib.request
        import zipfile

        with urllib.request.urlopen("http://mattmahoney.net/dc/text8.zip") as response:
            words = zipfile.ZipFile(io.BytesIO(response.read())).read("text8").decode().split()
        return [words[i:i + 10_000] for i in range(0, len(words), 10_000)]
    path = Path(name)
    if not path.is_file():
        raise DataError(f"corpus {name!r} is neither 'imdb', 'text8' nor a text file: pass one of those")
    return [clean_text8(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_pca(model: Word2Vec, words: Sequence[str], path: str | Path) -> None:
    """A PNG scatter of the words' vectors projected on their first two principal components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = model.vectors[[model.id(w) for w in words]]
    x = x - x.mean(0)
    xy = x @ np.linalg.svd(x, full_matrices=False)[2][:2].T  # rows of Vt are the principal directions
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(xy[:, 0], xy[:, 1], s=12)
    for word, (px, py) in zip(words, xy):
        ax.annotate(word, (px, py), fontsize=9, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="PC 1", ylabel="PC 2", title="word2vec: PCA of selected words")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# -------------------------------------------------------------------------------------------------------------- CLI


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _flag_bool(name: str, value: str | bool) -> bool:
    """A bool flag's value: true/false (1/0, yes/no, on/off); anything else is a one-line ConfigError."""
    if isinstance(value, bool):
        return value
    if value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"--{name.replace('_', '-')} expects true or false, got {value!r}"
                      + (" (--sg true: skip-gram, --sg false: CBOW)" if name == "sg" else ""))


def _output(path: str) -> str:
    """`path`, once its directory is known to exist (checked before training)."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise DataError(f"cannot write {path}: directory {folder} does not exist (create it or choose another path)")
    return path


def _corpus(name: str, data_dir: str | None) -> list[list[str]]:
    try:
        return load_corpus(name, data_dir)
    except UnicodeDecodeError as e:
        raise DataError(f"{name} is not UTF-8 text ({e.reason} at byte {e.start}): convert it first, e.g. "
                        f"`iconv -f latin1 -t utf-8`") from None


def _vectors(path: str) -> Word2Vec:
    if not Path(path).is_file():
        raise DataError(f"no vectors file at {path}: pass one that `lmjax word2vec train --out FILE` wrote (or any "
                        "word2vec-format file)")
    try:
        return load_word2vec_format(path)
    except DataError:
        raise
    except (ValueError, IndexError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable word2vec-format file ({type(e).__name__}: {e}): pass the file "
                        "`lmjax word2vec train` wrote") from None


def main(argv: Sequence[str] | None = None) -> int:
    """lmjax word2vec (or python -m lmjax.models.word2vec) {train,neighbours,analogy,similarity,evaluate,plot} ...

    Bad input (a missing or non-UTF-8 file, a bad flag value, an unknown word) exits 2 with one line.
    """
    parser = argparse.ArgumentParser(prog="lmjax word2vec", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train vectors and save them (.bin: binary word2vec format, else text)")
    p.add_argument("--corpus", default="imdb", help="'imdb', 'text8' (downloaded) or a text file, one sentence a line")
    p.add_argument("--out", required=True)
    p.add_argument("--data-dir")
    notes = {"sg": " (true: skip-gram, false: CBOW)", "hs": " (--hs alone: true; with --negative 0: hs only)",
             "negative": " (0: no negative sampling, needs --hs)"}
    for field in dataclasses.fields(Word2VecConfig):  # a bool flag alone means true: --hs, --sg false
        flag = {"type": str, "nargs": "?", "const": True} if field.type == "bool" else {"type": type(field.default)}
        batching = field.name in DESIGN_FIELDS  # default: the design validated for this machine
        p.add_argument(f"--{field.name.replace('_', '-')}", default=None if batching else field.default, **flag,
                       help=("default: this machine's validated design (see VALIDATED_DESIGNS)" if batching
                             else f"default {field.default}") + notes.get(field.name, ""))
    for name, help_ in (("neighbours", "nearest words"), ("analogy", "a is to b as c is to ?"),
                        ("similarity", "cosine similarity of two words"), ("evaluate", "analogies, WordSim, SimLex"),
                        ("plot", "PNG of a 2-D PCA projection of words")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("vectors", help="a word2vec-format file (text or binary)")
        p.add_argument("words", nargs="*" if name in ("evaluate", "plot") else "+")
        p.add_argument("--topn", type=int, default=10)
        p.add_argument("--out", default="word2vec_pca.png")
        p.add_argument("--data-dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            values = {f.name: _flag_bool(f.name, getattr(args, f.name)) if f.type == "bool"
                      else getattr(args, f.name) for f in dataclasses.fields(Word2VecConfig)}
            given = [name for name in DESIGN_FIELDS if values[name] is not None]
            out = _output(args.out)
            sentences = _corpus(args.corpus, args.data_dir)
            vocab = Vocab.build(sentences, values["min_count"])
            if given:  # a batching flag: the library defaults for the others, not half of a validated design
                why = f"set by {', '.join('--' + n.replace('_', '-') for n in given)}, Word2VecConfig's defaults else"
                values.update({f.name: f.default for f in dataclasses.fields(Word2VecConfig)
                               if f.name in DESIGN_FIELDS and values[f.name] is None})
            else:
                design, why = default_design(values["sg"], vocab_size=len(vocab))
                values.update(parse_design(design))
            cfg = Word2VecConfig(**values)
            print(f"design {format_design(cfg)} (batch_size:shared_negatives:steps_per_call:run:replicas:"
                  f"merge_every): {why}", file=sys.stderr)
            if cfg.replicas > 1:  # a CPU device per copy; possible only before JAX's backends start
                with contextlib.suppress(RuntimeError):
                    jax.config.update("jax_num_cpu_devices", cfg.replicas)
            model = train(sentences, cfg, vocab=vocab, verbose=True)
            save_word2vec_format(model, out, binary=out.endswith(".bin"))
            print(f"saved {len(model.words):,} x {cfg.dim} vectors to {out}")
            return 0
        if args.command == "plot":
            _output(args.out)
        if args.topn < 1:
            raise ConfigError(f"--topn={args.topn} is invalid: it must be >= 1 (how many words to list)")
        model = _vectors(args.vectors)
        if args.command == "neighbours":
            for word, score in model.most_similar(args.words, topn=args.topn):
                print(f"{word}\t{score:.4f}")
        elif args.command == "analogy":
            if len(args.words) != 3:
                raise ConfigError("analogy takes three words a b c (a is to b as c is to ?)")
            for word, score in model.analogy(*args.words, topn=args.topn):
                print(f"{word}\t{score:.4f}")
        elif args.command == "similarity":
            if len(args.words) != 2:
                raise ConfigError("similarity takes two words")
            print(f"{model.similarity(*args.words):.4f}")
        elif args.command == "evaluate":
            from lmjax.data import load_analogies, load_word_pairs

            for section, acc in evaluate_analogies(model, load_analogies(args.data_dir)).items():
                print(f"analogy {section}\t{acc:.4f}")
            for name in ("wordsim353", "simlex999"):
                print(f"{name} spearman\t{evaluate_word_pairs(model, load_word_pairs(name, args.data_dir))['spearman']:.4f}")
        else:
            plot_pca(model, args.words or model.words[:50], args.out)
            print(f"wrote {args.out}")
    except (KeyError, ConfigError, DataError) as error:
        print(f"error: {error.args[0]}", file=sys.stderr)
        return 2
    except OSError as e:  # a file that exists but cannot be read or written (permissions, a directory, a full disk)
        print(f"error: {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
