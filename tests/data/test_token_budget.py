"""TokenBudgetPairs: the token budget and shape contract, one pass over every pair per epoch, bos/eos layout,
bit-exact resume (also across an epoch end), process sharding, determinism of evaluation order, padding_fraction,
truncation and errors.

Contract checked: a batch of bucket (S, T) has B = max(R, max_tokens // max(S, T) // R * R) rows (R = row_multiple),
so B * max(S, T) <= max_tokens unless B = R; S, T are multiples of W = width_multiple and the smallest ones that hold
len(src) and len(tgt) + 1; tgt_in = bos + tgt, tgt_out = tgt + eos; padding is pad_id under False masks.
"""

from __future__ import annotations

import collections
import itertools
import json
import warnings

import numpy as np
import pytest

from lmjax.data import DataError, TokenBudgetPairs

PAD, BOS, EOS = 0, 1, 2


def synthetic_pairs(count: int = 300, longest: int = 40, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random (src, tgt) of lengths 1..longest with tokens 3..255 (never pad, bos or eos)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(3, 256, rng.integers(1, longest + 1)), rng.integers(3, 256, rng.integers(1, longest + 1)))
            for _ in range(count)]


EXAMPLES = synthetic_pairs()


def make(examples=EXAMPLES, max_tokens: int = 512, **kw) -> TokenBudgetPairs:
    return TokenBudgetPairs(examples, max_tokens, pad_id=PAD, bos_id=BOS, eos_id=EOS, seed=3, **kw)


def take(iterator, n):
    return list(itertools.islice(iterator, n))


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype
            np.testing.assert_array_equal(x[key], y[key])


def key(src, tgt) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(int(x) for x in src), tuple(int(x) for x in tgt)


def rows_of(batch) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The real pairs of a batch, checking each row's layout; empty rows (all-False masks) must be all padding."""
    out = []
    for row in range(len(batch["src"])):
        src_mask, tgt_mask = batch["src_mask"][row], batch["tgt_mask"][row]
        if not src_mask.any():
            assert not tgt_mask.any()
            assert (batch["src"][row] == PAD).all() and (batch["tgt_in"][row] == PAD).all()
            assert (batch["tgt_out"][row] == PAD).all()
            continue
        n_src, n_tgt = int(src_mask.sum()), int(tgt_mask.sum())
        assert src_mask[:n_src].all() and tgt_mask[:n_tgt].all()  # masks are prefixes
        src, tgt_in, tgt_out = batch["src"][row], batch["tgt_in"][row], batch["tgt_out"][row]
        assert (src[n_src:] == PAD).all() and (tgt_in[n_tgt:] == PAD).all() and (tgt_out[n_tgt:] == PAD).all()
        tgt = tgt_out[:n_tgt - 1]
        assert tgt_out[n_tgt - 1] == EOS and tgt_in[0] == BOS
        np.testing.assert_array_equal(tgt_in[1:n_tgt], tgt)  # tgt_in = bos + tgt, tgt_out = tgt + eos
        out.append(key(src[:n_src], tgt))
    return out


def up(n: int, multiple: int = 8) -> int:
    return max(-(-n // multiple) * multiple, multiple)


@pytest.mark.parametrize("max_tokens,width_multiple,row_multiple", [(512, 8, 8), (1000, 4, 2), (128, 8, 8)])
def test_batches_keep_the_token_budget_and_the_shape_multiples(max_tokens, width_multiple, row_multiple):
    it = make(max_tokens=max_tokens, width_multiple=width_multiple, row_multiple=row_multiple)
    minimum_rows_seen = False
    for batch in take(it, 2 * it.steps_per_epoch):
        (rows, s), (_, t) = batch["src"].shape, batch["tgt_in"].shape
        assert all(batch[k].shape == (rows, s) for k in ("src", "src_mask"))
        assert all(batch[k].shape == (rows, t) for k in ("tgt_in", "tgt_out", "tgt_mask"))
        assert all(batch[k].dtype == np.int32 for k in ("src", "tgt_in", "tgt_out"))
        assert batch["src_mask"].dtype == bool and batch["tgt_mask"].dtype == bool
        assert rows % row_multiple == 0 and rows >= row_multiple
        assert s % width_multiple == 0 and t % width_multiple == 0
        if rows == row_multiple:
            minimum_rows_seen |= rows * max(s, t) > max_tokens
        else:
            assert rows * max(s, t) <= max_tokens
        assert (rows + row_multiple) * max(s, t) > max_tokens  # as many rows as the budget allows
        # the bucket is the smallest that holds each of its pairs
        for src, tgt in rows_of(batch):
            assert s == up(len(src), width_multiple) and t == up(len(tgt) + 1, width_multiple)
    # a budget of 128 with widths up to 48 needs the minimum of row_multiple rows, over the budget
    assert minimum_rows_seen == (max_tokens == 128)


def test_every_pair_exactly_once_per_epoch_and_reshuffled_between_epochs():
    it = make()
    expected = collections.Counter(key(s, t) for s, t in EXAMPLES)
    epochs = []
    for _ in range(3):
        batches = take(it, it.steps_per_epoch)
        real_rows = sum(int(b["src_mask"].any(1).sum()) for b in batches)
        assert real_rows == len(EXAMPLES)
        seen = [pair for b in batches for pair in rows_of(b)]
        assert collections.Counter(seen) == expected
        epochs.append(seen)
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]  # a new order each epoch
    assert len({b["src"].shape for b in take(make(), it.steps_per_epoch)}) > 3  # several buckets in use


@pytest.mark.parametrize("cut", [0, 1, 5, "epoch-1", "epoch", "epoch+1", "2epochs"])
def test_restore_continues_with_the_next_batch_bit_exactly(cut):
    reference_it = make()
    steps = reference_it.steps_per_epoch
    cut = {"epoch-1": steps - 1, "epoch": steps, "epoch+1": steps + 1, "2epochs": 2 * steps}.get(cut, cut)
    reference = take(reference_it, 2 * steps + 5)
    first = make()
    assert_same(take(first, cut), reference[:cut])
    state = json.loads(json.dumps(first.state()))  # a small JSON-able dict
    resumed = make()
    resumed.restore(state)
    assert_same(take(resumed, len(reference) - cut), reference[cut:])
    assert_same(take(first, len(reference) - cut), reference[cut:])  # the original goes on the same way


def test_same_seed_same_batches_another_seed_another_order():
    assert_same(take(make(), 20), take(make(), 20))
    other = TokenBudgetPairs(EXAMPLES, 512, pad_id=PAD, bos_id=BOS, eos_id=EOS, seed=4)
    steps = other.steps_per_epoch
    assert [p for b in take(make(), steps) for p in rows_of(b)] != [p for b in take(other, steps) for p in rows_of(b)]


@pytest.mark.parametrize("process_count", [2, 4])
def test_processes_concatenated_give_the_single_process_batch(process_count):
    single = make()
    steps = single.steps_per_epoch + 4  # crosses an epoch end
    reference = take(single, steps)
    parts = [take(make(process_index=i, process_count=process_count), steps) for i in range(process_count)]
    for step, batch in enumerate(reference):
        local = [p[step] for p in parts]
        assert len({len(b["src"]) for b in local}) == 1  # every process gets the same number of rows
        assert_same([{k: np.concatenate([b[k] for b in local]) for k in batch}], [batch])


def test_a_state_saved_by_one_process_resumes_on_two():
    reference_it = make()
    reference = take(reference_it, reference_it.steps_per_epoch + 3)
    first = make()
    take(first, 7)
    halves = []
    for i in range(2):
        resumed = make(process_index=i, process_count=2)
        resumed.restore(first.state())
        halves.append(take(resumed, len(reference) - 7))
    assert_same([{k: np.concatenate([a[k], b[k]]) for k in a} for a, b in zip(*halves)], reference[7:])


def test_unshuffled_single_epoch_is_deterministic_and_stops():
    a, b = make(shuffle=False, num_epochs=1), make(shuffle=False, num_epochs=1)
    first, second = list(a), list(b)
    assert len(first) == a.steps_per_epoch
    assert_same(first, second)
    with pytest.raises(StopIteration):  # stays exhausted
        next(a)
    # buckets in order, and within a bucket the pairs in input order
    shapes = [(x["src"].shape[1], x["tgt_in"].shape[1]) for x in first]
    assert shapes == sorted(shapes)
    position = {key(s, t): i for i, (s, t) in enumerate(EXAMPLES)}
    order = [position[p] for x in first for p in rows_of(x)]
    assert sorted(order) == list(range(len(EXAMPLES)))
    by_bucket = collections.defaultdict(list)
    for x in first:
        by_bucket[(x["src"].shape[1], x["tgt_in"].shape[1])] += [position[p] for p in rows_of(x)]
    assert all(v == sorted(v) for v in by_bucket.values())
    # the shuffled iterator with the same budget has the same batches per epoch, in another order
    assert make().steps_per_epoch == len(first)


def test_padding_fraction_is_a_direct_count_over_one_epoch():
    for it in (make(), make(max_tokens=2048, width_multiple=16), make(shuffle=False, num_epochs=1)):
        batches = take(it, it.steps_per_epoch)
        real = sum(int(b["src_mask"].sum() + b["tgt_mask"].sum()) for b in batches)
        total = sum(b["src_mask"].size + b["tgt_mask"].size for b in batches)
        fraction = it.padding_fraction()
        assert 0 < fraction < 1
        assert fraction == pytest.approx(1 - real / total, abs=1e-12)
    # the same for the global batch when each process computes it
    assert make(process_index=1, process_count=2).padding_fraction() == pytest.approx(make().padding_fraction())


def test_long_pairs_are_truncated_with_one_warning():
    rng = np.random.default_rng(1)
    long_pairs = [(rng.integers(3, 256, 100), rng.integers(3, 256, 10)),  # source too long
                  (rng.integers(3, 256, 10), rng.integers(3, 256, 64)),  # target + eos too long
                  (rng.integers(3, 256, 64), rng.integers(3, 256, 63))]  # just fits
    examples = EXAMPLES[:50] + long_pairs
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        it = make(examples, max_len=64, shuffle=False, num_epochs=1)
        batches = list(it)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "2 of 53" in message and "64" in message
    assert max(max(b["src"].shape[1], b["tgt_in"].shape[1]) for b in batches) <= 64
    seen = collections.Counter(p for b in batches for p in rows_of(b))
    expected = collections.Counter(key(s[:64], t[:63]) for s, t in examples)
    assert seen == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to truncate: no warning
        make(EXAMPLES, max_len=64)


def test_errors_say_what_to_change():
    with pytest.raises(DataError, match="no sequence pairs"):
        make([])
    with pytest.raises(DataError, match="max_tokens=4 .*raise it"):
        make(max_tokens=4)
    with pytest.raises(DataError, match="process count"):
        make(process_count=3)
    with pytest.raises(ValueError, match="process_index"):
        next(make(process_index=2, process_count=2))
