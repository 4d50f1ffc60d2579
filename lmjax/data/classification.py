"""Sentence classification data (SST-2, and any dataset with a text field and an integer label), GPT-1 style.

Each sentence becomes `[SEP] sentence [SEP]`: GPT-1's start and extract tokens are the tokenizer's separator (or its
end-of-sequence token), and the classifier reads the final hidden state at the last one. Batches are right-padded
to the longest row rounded up to 16 (a few shapes, one compilation each): {"inputs": int32 [B, W], "lengths":
int32 [B] (0 marks an empty row, which counts for nothing), "labels": int32 [B]}.
"""

from __future__ import annotations

import numpy as np

from .batching import _process_rows
from .files import DataError
from .pipeline import Data, eval_batch_size


def pad_batch(ids, labels, batch_size: int, pad_id: int, max_len: int, multiple: int = 16) -> dict[str, np.ndarray]:
    """Right-padded rows, as wide as the longest one rounded up to `multiple`; a row over max_len keeps its first
    max_len - 1 tokens and its last (the extract token); rows past len(ids) are empty (length 0)."""
    ids = [x if len(x) <= max_len else np.concatenate([x[:max_len - 1], x[-1:]]) for x in ids]
    width = min(max_len, -(-max(map(len, ids), default=1) // multiple) * multiple)
    batch = {"inputs": np.full((batch_size, width), pad_id, np.int32),
             "lengths": np.zeros(batch_size, np.int32), "labels": np.zeros(batch_size, np.int32)}
    for row, (x, y) in enumerate(zip(ids, labels)):
        batch["inputs"][row, :len(x)], batch["lengths"][row], batch["labels"][row] = x, len(x), y
    return batch


class SentenceBatches:
    """Training batches: each epoch a permutation by `np.random.default_rng([seed, epoch])`, cut into full batches;
    this process's rows of each. Resumable: the state is (epoch, index of the next batch in it)."""

    def __init__(self, ids, labels, batch_size: int, pad_id: int, max_len: int, *, seed: int, process_index: int = 0,
                 process_count: int = 1):
        if len(ids) < batch_size:
            raise DataError(f"{len(ids)} training sentences make no batch of {batch_size}: lower data.batch_size")
        self.ids, self.labels, self.batch_size, self.pad_id, self.max_len = ids, labels, batch_size, pad_id, max_len
        self.seed, self.epoch, self.index = seed, 0, 0
        self._rows = _process_rows(batch_size, process_index, process_count)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.index >= len(self.ids) // self.batch_size:
            self.epoch, self.index = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.ids))
        chunk = order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
        self.index += 1
        batch = pad_batch([self.ids[i] for i in chunk], self.labels[chunk], self.batch_size, self.pad_id,
                          self.max_len)
        return {k: v[self._rows] for k, v in batch.items()}

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def sorted_batches(ids, labels, batch_size: int, pad_id: int, max_len: int, *, process_index: int = 0,
                   process_count: int = 1):
    """Every example once, sorted by length (few shapes, little padding); the last batch padded with empty rows."""
    rows = _process_rows(batch_size, process_index, process_count)
    order = np.argsort([len(x) for x in ids], kind="stable")
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = pad_batch([ids[i] for i in chunk], labels[chunk], batch_size, pad_id, max_len)
        yield {k: v[rows] for k, v in batch.items()}


def separator_id(tokenizer) -> int:
    sep = getattr(tokenizer, "sep_id", None)
    sep = sep if sep is not None else getattr(tokenizer, "eos_id", None)
    if sep is None:
        raise DataError("the tokenizer has neither a [SEP] nor an end-of-sequence token to mark sentences: use a "
                        "wordpiece or word tokenizer")
    return int(sep)


def encode_sentences(tokenizer, sentences: list[str]) -> list[np.ndarray]:
    sep = separator_id(tokenizer)
    return [np.concatenate([[sep], tokenizer.encode(s), [sep]]).astype(np.int32) for s in sentences]


def _split(dataset: str, split: str, data_dir, limit: int = 0) -> tuple[list[str], np.ndarray]:
    from .builders import load

    source = load(dataset, split, data_dir=data_dir)
    n = len(source) if not limit else min(limit, len(source))
    rows = source.__getitems__(list(range(n)))
    field = "sentence" if "sentence" in rows[0] else "text"
    return [r[field].decode("utf-8") for r in rows], np.array([int(r["label"]) for r in rows], np.int32)


def sentence_data(cfg, tokenizer=None) -> Data:
    """`data.dataset`'s labelled sentences: the first `data.max_examples` (0 = all) of train for training, shuffled
    per epoch; the whole validation split for evaluation (split "train" scores the training sentences). The tokenizer is the given one (a pretrained run's, or
    `data.tokenizer_dir`'s) or is fitted on the training sentences."""
    from .tokenizers import build_tokenizer

    d = cfg.data
    data_dir = d.data_dir or None
    train_text, train_labels = _split(d.dataset, "train", data_dir, d.max_examples)
    dev_text, dev_labels = _split(d.dataset, "validation", data_dir)
    tokenizer = tokenizer or build_tokenizer(d, "\n".join(train_text))
    train_ids, dev_ids = encode_sentences(tokenizer, train_text), encode_sentences(tokenizer, dev_text)
    pad_id = tokenizer.pad_id if getattr(tokenizer, "pad_id", None) is not None else 0
    max_len = d.seq_len
    num_classes = int(max(train_labels.max(), dev_labels.max())) + 1

    def train(process_index: int, process_count: int):
        return SentenceBatches(train_ids, train_labels, d.batch_size, pad_id, max_len, seed=d.seed,
                               process_index=process_index, process_count=process_count)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        if split not in ("validation", "train"):
            return None  # GLUE test labels are hidden
        ids, labels = (dev_ids, dev_labels) if split == "validation" else (train_ids, train_labels)
        return sorted_batches(ids, labels, eval_batch_size(cfg), pad_id, max_len,
                              process_index=process_index, process_count=process_count)

    return Data(tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, train=train, eval=evaluate,
                info={"num_classes": num_classes, "pad_id": pad_id, "train_size": len(train_ids),
                      "eval_size": len(dev_ids), "majority_eval_accuracy":
                      float(max(dev_labels.mean(), 1 - dev_labels.mean())) if num_classes == 2 else None})
