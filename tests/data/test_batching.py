"""Batches: determinism, resume, process sharding, exact evaluation coverage, bucket padding."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest

from lmjax.data import BucketedPairs, ContiguousStream, DataError, RandomWindows, eval_windows

TOKENS = np.arange(1_000, dtype=np.int32)  # a token's value is its position, so batches show where they came from


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])


def joined(batches_per_process):
    """The global batches made by concatenating each process's rows."""
    return [{k: np.concatenate([b[k] for b in step]) for k in step[0]} for step in zip(*batches_per_process)]


MAKERS = {
    "random": lambda **kw: RandomWindows(TOKENS, 8, 16, seed=3, **kw),
    "contiguous": lambda **kw: ContiguousStream(TOKENS, 8, 16, **kw),
    "contiguous_seeded": lambda **kw: ContiguousStream(TOKENS, 8, 16, seed=3, **kw),
    "pairs": lambda **kw: BucketedPairs([(np.arange(n % 13 + 1), np.arange(n % 7 + 1)) for n in range(100)], 8,
                                        buckets=(4, 8, 16), bos_id=1, eos_id=2, seed=3, **kw),
}


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_same_seed_same_batches(make):
    assert_same(take(make(), 30), take(make(), 30))


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_resume_gives_the_next_batches(make):
    reference = take(make(), 30)  # crosses epoch ends for all but RandomWindows
    first = make()
    take(first, 17)
    state = json.loads(json.dumps(first.state()))
    resumed = make()
    resumed.restore(state)
    assert_same(take(resumed, 13), reference[17:])


@pytest.mark.parametrize("make", MAKERS.values(), ids=MAKERS.keys())
def test_processes_split_the_same_global_batch(make):
    single = take(make(), 20)
    assert_same(joined([take(make(process_index=i, process_count=2), 20) for i in range(2)]), single)
    assert_same(joined([take(make(process_index=i, process_count=4), 20) for i in range(4)]), single)


def test_random_windows():
    batches = take(RandomWindows(TOKENS, 8, 16, seed=0), 2)
    for batch in batches:
        assert batch["inputs"].shape == (8, 16) and batch["inputs"].dtype == np.int32
        np.testing.assert_array_equal(batch["targets"], batch["inputs"] + 1)
        np.testing.assert_array_equal(np.diff(batch["inputs"], axis=1), 1)
    assert not np.array_equal(batches[0]["inputs"], batches[1]["inputs"])
    assert not np.array_equal(batches[0]["inputs"], next(RandomWindows(TOKENS, 8, 16, seed=1))["inputs"])


def test_contiguous_stream_carries_rows_across_batches():
    stream = ContiguousStream(TOKENS, 4, 10)  # rows of 250 tokens: (250 - 1) // 10 = 24 batches per epoch
    batches = take(stream, 25)
    for previous, batch in zip(batches[:23], batches[1:24]):
        np.testing.assert_array_equal(batch["inputs"][:, 0], previous["inputs"][:, -1] + 1)
        np.testing.assert_array_equal(batch["targets"], batch["inputs"] + 1)
    np.testing.assert_array_equal(batches[0]["inputs"][:, 0], [0, 250, 500, 750])
    assert [b["reset"].tolist() for b in batches] == [[True] * 4] + [[False] * 4] * 23 + [[True] * 4]
    assert_same(batches[24:], batches[:1])  # without a seed every epoch is the same
    assert stream.state() == {"epoch": 1, "index": 1}


def test_seeded_contiguous_stream_moves_window_boundaries_between_epochs():
    starts = set()
    stream = ContiguousStream(TOKENS, 4, 10, seed=0)
    for batch in take(stream, 24 * 6):
        if batch["reset"][0]:
            starts.add(int(batch["inputs"][0, 0]))
    assert len(starts) > 1 and all(0 <= s < 10 for s in starts)


@pytest.mark.parametrize("n, batch_size, seq_len", [(1_000, 8, 16), (1_001, 8, 16), (50, 8, 16), (5, 4, 3),
                                                   (129, 4, 32)])
def test_eval_windows_cover_every_target_once(n, batch_size, seq_len):
    tokens = np.arange(n, dtype=np.int32)
    batches = list(eval_windows(tokens, batch_size, seq_len))
    real = np.concatenate([b["targets"][b["mask"] == 1] for b in batches])
    np.testing.assert_array_equal(np.sort(real), tokens[1:])
    for batch in batches:
        assert batch["inputs"].shape == batch["targets"].shape == batch["mask"].shape == (batch_size, seq_len)
        assert batch["mask"].dtype == np.float32
        on = batch["mask"] == 1
        np.testing.assert_array_equal(batch["targets"][on], batch["inputs"][on] + 1)
    assert_same(joined([list(eval_windows(tokens, batch_size, seq_len, process_index=i, process_count=2))
                        for i in range(2)]), batches)


def test_eval_windows_max_batches():
    assert len(list(eval_windows(TOKENS, 4, 10, max_batches=3))) == 3
    assert len(list(eval_windows(TOKENS, 4, 10))) == 25  # ceil(ceil(999 / 4) / 10)


def test_too_short_or_unsplittable():
    with pytest.raises(DataError, match="too short"):
        RandomWindows(TOKENS[:16], 2, 16, seed=0)
    with pytest.raises(DataError, match="too short"):
        ContiguousStream(TOKENS[:100], 8, 16)
    with pytest.raises(DataError, match="multiple of 3"):
        RandomWindows(TOKENS, 8, 16, seed=0, process_count=3, process_index=0)


def pairs(count=200, longest=40, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(3, 50, rng.integers(1, longest)), rng.integers(3, 50, rng.integers(1, longest)))
            for _ in range(count)]


def test_bucketed_pairs_layout_and_padding():
    examples = pairs()
    batches = BucketedPairs(examples, 8, buckets=(8, 16, 32, 64), bos_id=1, eos_id=2, pad_id=0, num_epochs=1)
    seen = []
    for batch in batches:
        length = batch["src"].shape[1]
        assert all(batch[k].shape == (8, length) for k in batch) and length in (8, 16, 32, 64)
        for row in range(8):
            n_src, n_tgt = batch["src_mask"][row].sum(), batch["tgt_mask"][row].sum()
            if not n_tgt:
                continue  # an empty row filling the bucket's last batch
            src, tgt = batch["src"][row, :n_src], batch["tgt_out"][row, :n_tgt - 1]
            seen.append((tuple(src), tuple(tgt)))
            assert max(n_src, n_tgt) > {8: 0, 16: 8, 32: 16, 64: 32}[length]  # the smallest bucket that fits
            assert (batch["src"][row, n_src:] == 0).all() and (batch["tgt_in"][row, n_tgt:] == 0).all()
            assert batch["tgt_in"][row, 0] == 1 and batch["tgt_out"][row, n_tgt - 1] == 2
            np.testing.assert_array_equal(batch["tgt_in"][row, 1:n_tgt], tgt)
    assert sorted(seen) == sorted((tuple(s), tuple(t)) for s, t in examples)  # each pair once per epoch


def test_bucketed_pairs_epochs_and_remainders():
    examples = pairs()
    dropped = BucketedPairs(examples, 8, buckets=(8, 16, 32, 64), bos_id=1, eos_id=2, drop_remainder=True)
    kept = BucketedPairs(examples, 8, buckets=(8, 16, 32, 64), bos_id=1, eos_id=2)
    assert dropped.steps_per_epoch < kept.steps_per_epoch
    assert all(b["tgt_mask"].any(axis=1).all() for b in take(dropped, dropped.steps_per_epoch))
    first, second = take(kept, kept.steps_per_epoch), take(kept, kept.steps_per_epoch)
    assert not all(np.array_equal(a["src"], b["src"]) for a, b in zip(first, second))  # reshuffled
    unshuffled = BucketedPairs(examples, 8, buckets=(64,), bos_id=1, eos_id=2, shuffle=False, num_epochs=1)
    np.testing.assert_array_equal(next(unshuffled)["src"][0, :len(examples[0][0])], examples[0][0])


def test_overlong_pairs_are_truncated_with_one_warning():
    examples = pairs(longest=100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = BucketedPairs(examples, 8, buckets=(8, 16, 32), bos_id=1, eos_id=2, num_epochs=1)
        rows = sum(int(b["tgt_mask"].any(axis=1).sum()) for b in batches)
    assert len(caught) == 1 and "longer than the largest bucket (32)" in str(caught[0].message)
    assert rows == len(examples)


def test_bucketed_pairs_errors():
    with pytest.raises(DataError, match="no sequence pairs"):
        BucketedPairs([], 8, bos_id=1, eos_id=2)
    with pytest.raises(DataError, match="no full batch"):
        BucketedPairs(pairs(count=5), 8, bos_id=1, eos_id=2, drop_remainder=True)
