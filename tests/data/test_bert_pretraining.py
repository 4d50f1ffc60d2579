"""BERT pre-training examples: the structure of create_pretraining_data.py's instances and the masking statistics
measured on a large sample."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from lmjax.data import bert_pretraining as bp

CLS, SEP, MASK, V = 1, 2, 3, 1000
SPECIALS = bp.Specials(CLS, SEP, MASK, V, continuation=frozenset(range(500, 1000)))


def corpus(n_docs=300, seed=0, sentences=(1, 12), length=(3, 30)):
    """Documents of 1-11 sentences of 3-29 random ids; ids >= 500 are "##" continuations."""
    rng = np.random.default_rng(seed)
    return [[[int(t) for t in rng.integers(10, 1000, rng.integers(*length))] for _ in range(rng.integers(*sentences))]
            for _ in range(n_docs)]


CFG = bp.PretrainingConfig(max_seq_length=64, dupe_factor=3, seed=7)


@pytest.fixture(scope="module")
def instances():
    return bp.create_instances(corpus(), CFG, SPECIALS)


@pytest.fixture(scope="module")
def unmasked():
    return bp.create_instances(corpus(), CFG, SPECIALS, mask=False)


def test_instances_have_bert_input_format(instances):
    for x in instances:  # on the original tokens: a random replacement may draw any id, [SEP] too
        t, s = np.array(x.tokens), np.array(x.segment_ids)
        t[list(x.masked_positions)] = x.masked_labels
        assert len(t) == len(s) <= CFG.max_seq_length and t[0] == CLS and t[-1] == SEP
        seps = np.flatnonzero(t == SEP)
        assert len(seps) == 2
        assert (s[:seps[0] + 1] == 0).all() and (s[seps[0] + 1:] == 1).all()
        assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # both segments non-empty
        assert list(x.masked_positions) == sorted(x.masked_positions)
        assert not set(x.masked_positions) & {0, seps[0], seps[1]}  # never [CLS] or [SEP]


def test_is_next_segments_are_consecutive_text(unmasked):
    """An IsNext pair's A then B is contiguous text of one document; a chunk fills about max_seq_length - 3."""
    docs = corpus()
    texts = [" " + " ".join(map(str, (t for s in d for t in s))) + " " for d in docs]
    checked = 0
    for x in unmasked[:400]:
        t = list(x.tokens)
        sep = t.index(SEP)
        a, b = t[1:sep], t[sep + 1:-1]
        if not x.is_random_next and len(a) + len(b) < CFG.max_seq_length - 3:  # untruncated
            joined = " " + " ".join(map(str, a + b)) + " "
            assert any(joined in text for text in texts)
            checked += 1
    assert checked > 20


def test_same_seed_same_instances_and_dupes_differ(instances):
    again = bp.create_instances(corpus(), CFG, SPECIALS)
    assert again == instances
    other = bp.create_instances(corpus(), dataclasses.replace(CFG, seed=8), SPECIALS)
    assert other != instances
    assert len(instances) > 3 * len(corpus()) * 0.9


def mask_statistics(tokens, masked, positions, labels):
    n_mask = n_random = n_kept = 0
    for t_in, pos, lab in zip(masked, positions, labels):
        for p, l in zip(pos, lab):
            if t_in[p] == MASK:
                n_mask += 1
            elif t_in[p] == l:
                n_kept += 1
            else:
                n_random += 1
    total = n_mask + n_random + n_kept
    return total, n_mask / total, n_random / total, n_kept / total


def test_masking_statistics_on_a_large_sample():
    """15% of the tokens (k = round(0.15 n), capped by max_predictions_per_seq), 80% [MASK] / 10% random / 10%
    kept (a random draw equals the original with probability 1 / V, counted as kept), NSP half random."""
    cfg = bp.PretrainingConfig(max_seq_length=128, dupe_factor=2, max_predictions_per_seq=20, seed=3)
    xs = bp.create_instances(corpus(800, seed=1, sentences=(20, 40), length=(5, 20)), cfg, SPECIALS)
    arrays = bp.to_arrays(xs, cfg)
    n = arrays["input_mask"].sum(1)
    k = arrays["masked_lm_weights"].sum(1)
    np.testing.assert_array_equal(k, np.minimum(20, np.maximum(1, np.round(n * 0.15))))
    original = [[l for l in x.masked_labels] for x in xs]
    total, mask, rand, kept = mask_statistics([x.tokens for x in xs], [x.tokens for x in xs],
                                              [x.masked_positions for x in xs], original)
    assert total > 20_000
    assert abs(mask - 0.8) < 0.01 and abs(rand - 0.1 * (1 - 1 / V)) < 0.006 and abs(kept - 0.1) < 0.006
    nsp = arrays["next_sentence_labels"].mean()
    assert 0.5 < nsp < 0.6, nsp  # a one-sentence chunk (often a document's last) is always random-next
    short = np.mean(n < 0.6 * cfg.max_seq_length)
    assert short > 0.05  # short_seq_prob = 0.1 draws short targets


def test_dynamic_masking_has_the_same_statistics(unmasked):
    arrays = bp.to_arrays(unmasked, CFG)
    assert arrays["masked_lm_weights"].sum() == 0  # left unmasked
    rng = np.random.default_rng(0)
    totals = np.zeros(3)
    for _ in range(20):
        out = bp.dynamic_mask(arrays["input_ids"], arrays["input_mask"], CFG, SPECIALS, rng)
        n = arrays["input_mask"].sum(1)
        np.testing.assert_array_equal(out["masked_lm_weights"].sum(1),
                                      np.minimum(CFG.max_predictions_per_seq, np.maximum(1, np.round(n * 0.15))))
        w = out["masked_lm_weights"].astype(bool)
        rows = np.arange(len(n))[:, None].repeat(w.shape[1], 1)
        pos = out["masked_lm_positions"]
        original = arrays["input_ids"][rows, pos]
        np.testing.assert_array_equal(out["masked_lm_ids"][w], original[w])
        assert not np.isin(original[w], [CLS, SEP, 0]).any() and (pos[w] < n[rows[w]]).all()
        now = out["input_ids"][rows, pos]
        totals += [(now[w] == MASK).sum(), ((now[w] != MASK) & (now[w] != original[w])).sum(),
                   (now[w] == original[w]).sum()]
        untouched = np.ones_like(out["input_ids"], bool)
        untouched[rows[w], pos[w]] = False
        np.testing.assert_array_equal(out["input_ids"][untouched], arrays["input_ids"][untouched])
    frac = totals / totals.sum()
    assert abs(frac[0] - 0.8) < 0.01 and abs(frac[1] - 0.1) < 0.008 and abs(frac[2] - 0.1) < 0.008


def test_whole_word_masking_takes_words_whole():
    cfg = dataclasses.replace(CFG, whole_word=True)
    xs = bp.create_instances(corpus(), cfg, SPECIALS)
    for x in xs[:2000]:
        tokens, chosen = x.tokens, set(x.masked_positions)
        labels = dict(zip(x.masked_positions, x.masked_labels))
        original = [labels.get(i, t) for i, t in enumerate(tokens)]
        for i in range(1, len(original)):  # a continuation is chosen exactly when the piece before it is
            if original[i] in SPECIALS.continuation and original[i - 1] not in (CLS, SEP):
                assert (i in chosen) == (i - 1 in chosen)


def test_truncation_and_bad_input():
    a, b = list(range(10)), list(range(5))
    import random

    bp.truncate_pair(a, b, 8, random.Random(0))
    assert (len(a), len(b)) == (4, 4)  # the longer one first; on ties b
    with pytest.raises(ValueError, match="no document"):
        bp.create_instances([[], [[]]], CFG, SPECIALS)
    with pytest.raises(ValueError, match=r"no \[MASK\]"):
        bp.Specials.from_vocab(["[PAD]", "[CLS]", "[SEP]"])
    s = bp.Specials.from_vocab(["[PAD]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"])
    assert (s.cls, s.sep, s.mask, s.vocab_size, s.continuation) == (1, 2, 3, 6, frozenset({5}))
