"""Host-side batches for training and evaluation: NumPy only, resumable, the same whatever the process count.

Every iterator yields dicts of NumPy arrays for one process. With global batch B over P processes, process i gets
rows [i*B/P, (i+1)*B/P) of the same global batch, so concatenating the processes' batches gives the batch of a
single process. The order is a pure function of the seed; `state()` is a small JSON-able dict and `restore(state)`
continues with exactly the batch that would have come next. The engine places the arrays on the device mesh.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import numpy as np

from .files import DataError

Batch = dict[str, np.ndarray]


def _process_rows(batch_size: int, process_index: int, process_count: int) -> slice:
    """This process's rows of a global batch."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    if batch_size % process_count:
        raise DataError(f"the global batch size {batch_size} does not split over {process_count} processes: "
                        f"set data.batch_size to a multiple of {process_count}")
    rows = batch_size // process_count
    return slice(process_index * rows, (process_index + 1) * rows)


def _token_stream(tokens: np.ndarray, needed: int, seq_len: int) -> np.ndarray:
    tokens = np.asarray(tokens, dtype=np.int32)
    if tokens.ndim != 1 or len(tokens) < needed:
        raise DataError(f"a stream of {len(tokens)} tokens is too short for these batches of seq_len {seq_len} "
                        f"(needs {needed}): lower data.seq_len or data.batch_size, or use a larger split")
    return tokens


class RandomWindows:
    """nanoGPT-style language-model batches: B windows of T+1 tokens at uniformly random offsets.

    Step k draws its offsets with `np.random.default_rng([seed, k])`, so its batch depends on (seed, k) alone and
    the state is just k. Yields {"inputs": int32[B/P, T], "targets": int32[B/P, T]}, targets = inputs shifted by one.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, *, seed: int, process_index: int = 0,
                 process_count: int = 1):
        self.tokens = _token_stream(tokens, seq_len + 1, seq_len)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self._rows = _process_rows(batch_size, process_index, process_count)
        self.step = 0

    def __iter__(self) -> RandomWindows:
        return self

    def __next__(self) -> Batch:
        rng = np.random.default_rng([self.seed, self.step])
        starts = rng.integers(0, len(self.tokens) - self.seq_len, size=self.batch_size)[self._rows]
        windows = self.tokens[starts[:, None] + np.arange(self.seq_len + 1)]
        self.step += 1
        return {"inputs": windows[:, :-1].copy(), "targets": windows[:, 1:].copy()}

    def state(self) -> dict:
        return {"step": self.step}

    def restore(self, state: dict) -> None:
        self.step = int(state["step"])


class ContiguousStream:
    """Zaremba-style batches for recurrent models, which carry their state from one batch to the next.

    Each epoch cuts the token stream into B contiguous rows of L = n // B tokens and walks them T at a time:
    batch i holds columns [i*T, (i+1)*T) as inputs and the next token of each as targets, for (L - 1) // T batches.
    With a `seed`, epoch e first drops the stream's first `rng([seed, e]).integers(T)` tokens, so the window
    boundaries move between epochs; without one every epoch is the same. Yields {"inputs": int32[B/P, T],
    "targets": int32[B/P, T], "reset": bool[B/P]}, where reset (the first batch of an epoch) means "start from a
    zero state". The state is (epoch, index of the next batch in it).
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, *, seed: int | None = None,
                 process_index: int = 0, process_count: int = 1):
        # The longest shift (T - 1) must still leave one window per row.
        self.tokens = _token_stream(tokens, batch_size * (seq_len + 1) + (seq_len - 1 if seed is not None else 0),
                                    seq_len)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self._rows = _process_rows(batch_size, process_index, process_count)
        self.epoch, self.index = 0, 0

    def _grid(self, epoch: int) -> np.ndarray:
        """The epoch's stream as B rows (a view)."""
        shift = 0 if self.seed is None else int(np.random.default_rng([self.seed, epoch]).integers(self.seq_len))
        stream = self.tokens[shift:]
        length = len(stream) // self.batch_size
        return stream[:self.batch_size * length].reshape(self.batch_size, length)

    def __iter__(self) -> ContiguousStream:
        return self

    def __next__(self) -> Batch:
        grid = self._grid(self.epoch)
        if self.index >= (grid.shape[1] - 1) // self.seq_len:
            self.epoch, self.index = self.epoch + 1, 0
            grid = self._grid(self.epoch)
        start = self.index * self.seq_len
        rows = grid[self._rows]
        batch = {"inputs": rows[:, start:start + self.seq_len].copy(),
                 "targets": rows[:, start + 1:start + self.seq_len + 1].copy(),
                 "reset": np.full(len(rows), self.index == 0)}
        self.index += 1
        return batch

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def eval_windows(tokens: np.ndarray, batch_size: int, seq_len: int, *, max_batches: int | None = None,
                 process_index: int = 0, process_count: int = 1) -> Iterator[Batch]:
    """Deterministic evaluation batches in which every target token appears exactly once.

    The n - 1 targets (tokens[1:], each with the token before it as input) are laid out in B contiguous rows of
    R = ceil((n - 1) / B) positions, walked T at a time: ceil(R / T) batches, or the first `max_batches` of them (a
    sample spread over the whole stream). Rows are contiguous, so a recurrent model may carry its state across
    batches as in Zaremba's evaluation. Padding (the end of the last row and of the last window) has mask 0, so
    sum(loss * mask) / sum(mask) is the exact per-token loss. Yields {"inputs", "targets": int32[B/P, T],
    "mask": float32[B/P, T]}.
    """
    tokens = _token_stream(tokens, 2, seq_len)
    rows = _process_rows(batch_size, process_index, process_count)
    n = len(tokens) - 1
    per_row = -(-n // batch_size)
    windows = -(-per_row // seq_len)
    count = windows if max_batches is None else min(windows, max_batches)

    def grid(values: np.ndarray) -> np.ndarray:
        padded = np.zeros(batch_size * per_row, values.dtype)
        padded[:n] = values
        return np.pad(padded.reshape(batch_size, per_row)[rows], ((0, 0), (0, windows * seq_len - per_row)))

    inputs, targets, mask = grid(tokens[:-1]), grid(tokens[1:]), grid(np.ones(n, np.float32))
    for i in range(count):
        columns = slice(i * seq_len, (i + 1) * seq_len)
        yield {"inputs": inputs[:, columns], "targets": targets[:, columns], "mask": mask[:, columns]}


def _pair_batch(srcs: list[np.ndarray], tgts: list[np.ndarray], chunk: np.ndarray, rows: int, s_len: int,
                t_len: int, pad_id: int, bos_id: int, eos_id: int) -> Batch:
    """Rows of pairs `chunk` (indices into srcs/tgts; -1, or rows past the chunk, stay empty): src, src_mask,
    tgt_in = bos + tgt, tgt_out = tgt + eos, tgt_mask, padded with pad_id to widths s_len and t_len."""
    src = np.full((rows, s_len), pad_id, np.int32)
    tgt_in = np.full((rows, t_len), pad_id, np.int32)
    tgt_out = tgt_in.copy()
    src_mask, tgt_mask = np.zeros((rows, s_len), bool), np.zeros((rows, t_len), bool)
    for row, k in enumerate(chunk):
        if k < 0:
            continue
        s, t = srcs[k], tgts[k]
        src[row, :len(s)], src_mask[row, :len(s)] = s, True
        tgt_in[row, 0], tgt_in[row, 1:len(t) + 1] = bos_id, t
        tgt_out[row, :len(t)], tgt_out[row, len(t)] = t, eos_id
        tgt_mask[row, :len(t) + 1] = True
    return {"src": src, "src_mask": src_mask, "tgt_in": tgt_in, "tgt_out": tgt_out, "tgt_mask": tgt_mask}


class BucketedPairs:
    """Padded, length-bucketed (source, target) batches for sequence-to-sequence training.

    A pair goes to the smallest bucket L with len(src) <= L and len(tgt) + 1 <= L (the +1 is bos or eos), and both
    sides are padded to L: a batch has one of len(buckets) shapes (one compilation each), and a pair is longer than
    the next smaller bucket, so with doubling buckets padding stays under half of a row (but in the smallest
    bucket). A pair longer than the largest bucket is truncated to it, never dropped
    (one warning per iterator says how many). Each epoch shuffles within the buckets and then the order of the
    batches, with `np.random.default_rng([seed, epoch])`; a bucket's last partial batch is dropped
    (`drop_remainder`) or filled with empty rows (all-False masks), so every batch has B rows. `num_epochs=None`
    repeats forever; evaluation passes `shuffle=False, num_epochs=1`.
    Yields {"src": int32[B/P, L], "src_mask": bool[B/P, L], "tgt_in": bos + tgt, "tgt_out": tgt + eos (int32[B/P, L]),
    "tgt_mask": bool[B/P, L]}; padding is `pad_id`. The state is (epoch, index of the next batch in it).
    """

    def __init__(self, examples: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int, *,
                 buckets: Sequence[int] = (8, 16, 32, 64, 128), pad_id: int = 0, bos_id: int, eos_id: int,
                 seed: int = 0, shuffle: bool = True, drop_remainder: bool = False, num_epochs: int | None = None,
                 process_index: int = 0, process_count: int = 1):
        if not examples:
            raise DataError("no sequence pairs to batch: check the dataset split")
        self.buckets = tuple(sorted(buckets))
        longest = self.buckets[-1]
        self._src = [np.asarray(src, np.int32) for src, _ in examples]
        self._tgt = [np.asarray(tgt, np.int32) for _, tgt in examples]
        lengths = np.array([max(len(s), len(t) + 1) for s, t in zip(self._src, self._tgt)])
        if truncated := int((lengths > longest).sum()):
            warnings.warn(f"{truncated} of {len(examples)} sequence pairs are longer than the largest bucket "
                          f"({longest}) and are truncated to it", stacklevel=2)
            self._src = [s[:longest] for s in self._src]
            self._tgt = [t[:longest - 1] for t in self._tgt]
        bucket_of = np.searchsorted(self.buckets, np.minimum(lengths, longest))
        self._members = [np.flatnonzero(bucket_of == b) for b in range(len(self.buckets))]
        self.batch_size, self.pad_id, self.bos_id, self.eos_id = batch_size, pad_id, bos_id, eos_id
        self.seed, self.shuffle, self.drop_remainder, self.num_epochs = seed, shuffle, drop_remainder, num_epochs
        self._rows = _process_rows(batch_size, process_index, process_count)
        self._planned: tuple[int, list] = (-1, [])
        if not self._plan(0):
            raise DataError(f"{len(examples)} sequence pairs make no full batch of {batch_size}: "
                            "lower the batch size or keep partial batches (drop_remainder=False)")
        self.epoch, self.index = 0, 0

    def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """The epoch's batches: (bucket, example indices, at most B of them); the last epoch's is kept."""
        if self._planned[0] == epoch:
            return self._planned[1]
        rng = np.random.default_rng([self.seed, epoch])
        plan = []
        for bucket, members in enumerate(self._members):
            if self.shuffle:
                members = rng.permutation(members)
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_remainder:
                    plan.append((bucket, chunk))
        if self.shuffle:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        self._planned = (epoch, plan)
        return plan

    @property
    def steps_per_epoch(self) -> int:
        return len(self._plan(0))

    def __iter__(self) -> BucketedPairs:
        return self

    def __next__(self) -> Batch:
        plan = self._plan(self.epoch)
        if self.index >= len(plan):
            self.epoch, self.index = self.epoch + 1, 0
            plan = self._plan(self.epoch)
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        bucket, chunk = plan[self.index]
        self.index += 1
        return self._batch(self.buckets[bucket], chunk[self._rows])

    def _batch(self, length: int, chunk: np.ndarray) -> Batch:
        return _pair_batch(self._src, self._tgt, chunk, self._rows.stop - self._rows.start, length, length,
                           self.pad_id, self.bos_id, self.eos_id)

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


class TokenBudgetPairs:
    """(source, target) batches under a token budget per batch, as fairseq's `--max-tokens`, in few shapes.

    A pair goes to the bucket (S, T): its source length and its target length + 1 (bos or eos) rounded up to a
    multiple of `width_multiple` (and at most `max_len`). A bucket's batches have B = max_tokens // max(S, T) rows,
    rounded down to a multiple of `row_multiple` (at least `row_multiple`), so a batch holds at most about
    `max_tokens` positions per side (padding included) and there is one batch shape (one compilation) per bucket.
    Pairs of similar lengths share a batch, so little compute goes to padding (`padding_fraction`). Pairs longer than
    `max_len` are truncated to it (one warning says how many). Each epoch shuffles within the buckets and then the
    order of the batches, with `np.random.default_rng([seed, epoch])`; a bucket's last partial batch is filled with
    empty rows (all-False masks), never dropped. `num_epochs=None` repeats forever; evaluation passes
    `shuffle=False, num_epochs=1` (buckets in lexicographic (S, T) order, pairs in input order within a bucket).
    Yields the keys of `BucketedPairs`, this process's rows; the state is (epoch, index of the next batch).
    """

    def __init__(self, examples: Sequence[tuple[Sequence[int], Sequence[int]]], max_tokens: int, *, pad_id: int,
                 bos_id: int, eos_id: int, width_multiple: int = 8, row_multiple: int = 8, max_len: int = 256,
                 seed: int = 0, shuffle: bool = True, num_epochs: int | None = None, process_index: int = 0,
                 process_count: int = 1):
        if not examples:
            raise DataError("no sequence pairs to batch: check the dataset split")
        if max_tokens < width_multiple:
            raise DataError(f"data.max_tokens={max_tokens} is below one row of {width_multiple} tokens: raise it")
        if row_multiple % process_count:
            raise DataError(f"batch rows come in multiples of {row_multiple}, which do not split over {process_count} "
                            f"processes: use a process count dividing {row_multiple}")
        self._src = [np.asarray(src, np.int32)[:max_len] for src, _ in examples]
        self._tgt = [np.asarray(tgt, np.int32)[:max_len - 1] for _, tgt in examples]
        if truncated := sum(len(s) > max_len or len(t) + 1 > max_len for s, t in examples):
            warnings.warn(f"{truncated} of {len(examples)} sequence pairs are longer than {max_len} tokens and are "
                          "truncated to it", stacklevel=2)
        up = lambda n: min(max(-(-n // width_multiple) * width_multiple, width_multiple), max_len)  # noqa: E731
        keys = [(up(len(s)), up(len(t) + 1)) for s, t in zip(self._src, self._tgt)]
        self.buckets = sorted(set(keys))
        index = {key: i for i, key in enumerate(self.buckets)}
        bucket_of = np.array([index[k] for k in keys])
        self._members = [np.flatnonzero(bucket_of == b) for b in range(len(self.buckets))]
        self.rows = [max(row_multiple, max_tokens // max(s, t) // row_multiple * row_multiple)
                     for s, t in self.buckets]
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.seed, self.shuffle, self.num_epochs = seed, shuffle, num_epochs
        self.process_index, self.process_count = process_index, process_count
        self._planned: tuple[int, list] = (-1, [])
        self.epoch, self.index = 0, 0

    def _plan(self, epoch: int) -> list[tuple[int, np.ndarray]]:
        """The epoch's batches: (bucket, example indices, at most that bucket's B of them); the last epoch's is
        kept."""
        if self._planned[0] == epoch:
            return self._planned[1]
        rng = np.random.default_rng([self.seed, epoch])
        plan = []
        for bucket, members in enumerate(self._members):
            if self.shuffle:
                members = rng.permutation(members)
            rows = self.rows[bucket]
            plan += [(bucket, members[start:start + rows]) for start in range(0, len(members), rows)]
        if self.shuffle:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        self._planned = (epoch, plan)
        return plan

    @property
    def steps_per_epoch(self) -> int:
        return len(self._plan(0))

    def padding_fraction(self) -> float:
        """The share of an epoch's batch positions (source and target sides, empty rows included) that are
        padding."""
        real = sum(len(s) + len(t) + 1 for s, t in zip(self._src, self._tgt))
        total = sum(self.rows[b] * sum(self.buckets[b]) for b, _ in self._plan(0))
        return 1.0 - real / total

    def __iter__(self) -> TokenBudgetPairs:
        return self

    def __next__(self) -> Batch:
        plan = self._plan(self.epoch)
        if self.index >= len(plan):
            self.epoch, self.index = self.epoch + 1, 0
            plan = self._plan(self.epoch)
        if self.num_epochs is not None and self.epoch >= self.num_epochs:
            raise StopIteration
        bucket, chunk = plan[self.index]
        self.index += 1
        rows = _process_rows(self.rows[bucket], self.process_index, self.process_count)
        mine = np.full(self.rows[bucket], -1)
        mine[:len(chunk)] = chunk
        return self._batch(self.buckets[bucket], mine[rows])

    def _batch(self, widths: tuple[int, int], chunk: np.ndarray) -> Batch:
        return _pair_batch(self._src, self._tgt, chunk, len(chunk), *widths, self.pad_id, self.bos_id, self.eos_id)

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
