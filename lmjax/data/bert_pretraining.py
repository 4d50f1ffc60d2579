"""BERT pre-training examples, as google-research/bert's `create_pretraining_data.py` makes them.

Input: documents, each a list of sentences, each a list of WordPiece ids. For every document (`dupe_factor` passes
over all of them, then one shuffle of all the instances), `instances_from_document` packs consecutive sentences
into chunks of about `target` = max_seq_length - 3 tokens (with probability `short_seq_prob` a target drawn
uniformly from 2..max_seq_length - 3 instead, so that the model also sees short inputs):

    chunk = sentences s_i .. s_j,  A = s_i .. s_{a-1},  a ~ U{i+1..j} (a = i+1 for a one-sentence chunk)
    B = s_a .. s_j                                             "IsNext", with probability 1/2 (never for one sentence)
    B = sentences of a random other document from a random start, up to `target` - |A| tokens      "NotNext"
        (the chunk's unused sentences s_a .. s_j are put back and start the next chunk)
    truncate the longer of A and B, from the front or the back with probability 1/2, to max_seq_length - 3 tokens
    input = [CLS] A [SEP] B [SEP],  segment ids 0 for [CLS] A [SEP], 1 for B [SEP]

Masking (`mask_tokens`), per instance of n tokens: k = min(max_predictions_per_seq, max(1, round(n p))) of the
candidates (every token but [CLS] and [SEP]; with `whole_word` a word's pieces, the first and its "##"
continuations, are one candidate taken whole or not at all) are chosen in a uniformly shuffled order; each chosen
token becomes [MASK] with probability 0.8, a uniformly random vocabulary entry with probability 0.1, and stays
itself with probability 0.1; the label is the original token.

Every random draw goes through one `random.Random(seed)` in the reference's order (`random()`, `randint`,
`shuffle`), so for the same documents and seed these functions return the reference's instances exactly. Static
masking masks once per instance here (`dupe_factor` copies with different masks, as the reference); dynamic
masking (`dynamic_mask`) leaves the instances unmasked and draws new masks, vectorised, each time a batch is made.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PretrainingConfig:
    max_seq_length: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    dupe_factor: int = 10
    whole_word: bool = False
    seed: int = 12345  # the reference's default random_seed


@dataclasses.dataclass(frozen=True)
class Specials:
    """The ids masking needs: [CLS], [SEP], [MASK], the vocabulary size (random replacements are uniform over all of
    it, specials included, as the reference's `vocab_words`), and which ids are "##" continuations (whole-word
    masking)."""

    cls: int
    sep: int
    mask: int
    vocab_size: int
    continuation: frozenset[int] = frozenset()

    @classmethod
    def from_vocab(cls, vocab: Sequence[str]) -> Specials:
        index = {token: i for i, token in enumerate(vocab)}
        missing = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in index]
        if missing:
            raise ValueError(f"the vocabulary has no {', '.join(missing)}: BERT pre-training needs them")
        return cls(index["[CLS]"], index["[SEP]"], index["[MASK]"], len(vocab),
                   frozenset(i for i, t in enumerate(vocab) if t.startswith("##")))


@dataclasses.dataclass(frozen=True)
class Instance:
    tokens: tuple[int, ...]              # [CLS] A [SEP] B [SEP], masked
    segment_ids: tuple[int, ...]
    is_random_next: bool
    masked_positions: tuple[int, ...]    # ascending
    masked_labels: tuple[int, ...]       # the original ids there


def truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Shorten the longer of a and b (b on ties) by one token, from the front or the back with probability 1/2,
    until both fit in max_tokens."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def mask_tokens(tokens: Sequence[int], cfg: PretrainingConfig, specials: Specials, rng: random.Random
                ) -> tuple[list[int], list[int], list[int]]:
    """(masked tokens, masked positions ascending, their original ids): the reference's
    create_masked_lm_predictions."""
    candidates: list[list[int]] = []
    for i, token in enumerate(tokens):
        if token in (specials.cls, specials.sep):
            continue
        if cfg.whole_word and candidates and token in specials.continuation:
            candidates[-1].append(i)
        else:
            candidates.append([i])
    rng.shuffle(candidates)
    output = list(tokens)
    k = min(cfg.max_predictions_per_seq, max(1, int(round(len(tokens) * cfg.masked_lm_prob))))
    chosen: list[int] = []
    covered: set[int] = set()
    for word in candidates:
        if len(chosen) >= k:
            break
        if len(chosen) + len(word) > k or any(i in covered for i in word):
            continue
        for i in word:
            covered.add(i)
            if rng.random() < 0.8:
                output[i] = specials.mask
            elif rng.random() >= 0.5:  # else it stays itself
                output[i] = rng.randint(0, specials.vocab_size - 1)
            chosen.append(i)
    chosen.sort()
    return output, chosen, [tokens[i] for i in chosen]


def instances_from_document(documents: Sequence[Sequence[Sequence[int]]], index: int, cfg: PretrainingConfig,
                            specials: Specials, rng: random.Random, mask: bool = True) -> list[Instance]:
    """The reference's create_instances_from_document for documents[index] (mask=False: no masking draws, the
    instances unmasked, for dynamic masking)."""
    document = documents[index]
    max_tokens = cfg.max_seq_length - 3
    target = max_tokens
    if rng.random() < cfg.short_seq_prob:
        target = rng.randint(2, max_tokens)
    instances, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for sentence in chunk[:a_end] for t in sentence]
                b: list[int] = []
                if len(chunk) == 1 or rng.random() < 0.5:
                    is_random_next = True
                    for _ in range(10):
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    random_document = documents[other]
                    for sentence in random_document[rng.randint(0, len(random_document) - 1):]:
                        b.extend(sentence)
                        if len(b) >= target - len(a):
                            break
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    is_random_next = False
                    b = [t for sentence in chunk[a_end:] for t in sentence]
                truncate_pair(a, b, max_tokens, rng)
                if not a or not b:
                    raise ValueError("an empty segment: every sentence needs at least one token")
                tokens = [specials.cls, *a, specials.sep, *b, specials.sep]
                segments = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                positions, labels = [], []
                if mask:
                    tokens, positions, labels = mask_tokens(tokens, cfg, specials, rng)
                instances.append(Instance(tuple(tokens), tuple(segments), is_random_next, tuple(positions),
                                          tuple(labels)))
            chunk, length = [], 0
        i += 1
    return instances


def create_instances(documents: Sequence[Sequence[Sequence[int]]], cfg: PretrainingConfig, specials: Specials,
                     mask: bool = True) -> list[Instance]:
    """The reference's create_training_instances from tokenised documents: empty documents dropped, the documents
    shuffled, `dupe_factor` passes, the instances shuffled."""
    rng = random.Random(cfg.seed)
    documents = [[list(s) for s in d if len(s)] for d in documents]
    documents = [d for d in documents if d]
    if not documents:
        raise ValueError("no document has a non-empty sentence: nothing to pre-train on")
    rng.shuffle(documents)
    instances = []
    for _ in range(cfg.dupe_factor):
        for index in range(len(documents)):
            instances.extend(instances_from_document(documents, index, cfg, specials, rng, mask))
    rng.shuffle(instances)
    return instances


def to_arrays(instances: Sequence[Instance], cfg: PretrainingConfig) -> dict[str, np.ndarray]:
    """Padded arrays as the reference's tf.train.Examples: input_ids, input_mask, segment_ids [N, max_seq_length],
    masked_lm_positions, masked_lm_ids, masked_lm_weights [N, max_predictions_per_seq], next_sentence_labels [N]
    (1 = random next, as the reference)."""
    n, T, P = len(instances), cfg.max_seq_length, cfg.max_predictions_per_seq
    out = {"input_ids": np.zeros((n, T), np.int32), "input_mask": np.zeros((n, T), np.int32),
           "segment_ids": np.zeros((n, T), np.int32), "masked_lm_positions": np.zeros((n, P), np.int32),
           "masked_lm_ids": np.zeros((n, P), np.int32), "masked_lm_weights": np.zeros((n, P), np.float32),
           "next_sentence_labels": np.array([int(x.is_random_next) for x in instances], np.int32)}
    for r, x in enumerate(instances):
        L, k = len(x.tokens), len(x.masked_positions)
        out["input_ids"][r, :L], out["input_mask"][r, :L], out["segment_ids"][r, :L] = x.tokens, 1, x.segment_ids
        out["masked_lm_positions"][r, :k], out["masked_lm_ids"][r, :k] = x.masked_positions, x.masked_labels
        out["masked_lm_weights"][r, :k] = 1.0
    return out


def dynamic_mask(input_ids: np.ndarray, input_mask: np.ndarray, cfg: PretrainingConfig, specials: Specials,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fresh masks for a batch of unmasked instances (no whole-word grouping): per row, k = min(max_predictions,
    max(1, round(n p))) positions uniformly among the candidates, then 80% [MASK], 10% random, 10% kept, the same
    distribution as `mask_tokens`. Returns input_ids (masked), masked_lm_positions, masked_lm_ids, masked_lm_weights."""
    ids = np.asarray(input_ids)
    B, P = ids.shape[0], cfg.max_predictions_per_seq
    real = np.asarray(input_mask).astype(bool)
    candidate = real & (ids != specials.cls) & (ids != specials.sep)
    k = np.minimum(P, np.maximum(1, np.round(real.sum(1) * cfg.masked_lm_prob).astype(int)))
    k = np.minimum(k, candidate.sum(1))
    keys = np.where(candidate, rng.random(ids.shape), np.inf)
    order = np.argsort(keys, axis=1)[:, :P]                          # a uniform random order of the candidates
    take = np.arange(P) < k[:, None]
    positions = np.sort(np.where(take, order, ids.shape[1]), axis=1)  # ascending, unused slots last
    positions = np.where(take, positions, 0)
    rows = np.arange(B)[:, None]
    labels = np.where(take, ids[rows, positions], 0)
    u = rng.random((B, P))
    replacement = np.where(u < 0.8, specials.mask,
                           np.where(u < 0.9, rng.integers(0, specials.vocab_size, (B, P)), labels))
    masked = ids.copy()
    masked[rows.repeat(P, 1)[take], positions[take]] = replacement[take]
    return {"input_ids": masked.astype(np.int32), "masked_lm_positions": positions.astype(np.int32),
            "masked_lm_ids": labels.astype(np.int32), "masked_lm_weights": take.astype(np.float32)}
