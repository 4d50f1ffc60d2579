"""Word-level inputs of the downstream tasks, for models that read words (a word table, word2vec, ELMo's characters).

    data = word_task_data(cfg, tokenizer=None)   # SST-2, RTE, UD EWT UPOS or CoNLL-2000 chunks, as words

Examples are sentences of words: SST-2's sentence and RTE's "premise </s> hypothesis" split with
`elmo_data.split_words` (the tagging sets come as words already), every sequence wrapped in the boundary word
`</s>` ... `</s>` as ELMo saw its text. Labels: one per sentence, or a tag per word. Splits are bert_tasks' (GLUE
dev for validation; EWT's dev; CoNLL-2000's last 500 training sentences; the tagging test sets).

Vocabulary (`Data.tokenizer`, a WordTokenizer): the run's or its init_from run's (ELMo's), else the word2vec file's
words (`model.vectors`), else the training words of the task (`model.encoder=random`). A word's id is its own, else
its lower-cased form's, else (word2vec's text8-cleaned vocabulary) its cleaned form's, else `<unk>`.

Batches (int32 but none): words [B, W], chars [B, W, C] (encoder elmo), lengths [B] (boundaries included),
labels [B] or [B, W - 2] (the words' tags, -1 at padding); W = the longest row rounded up to 16, 32, 64, ...;
training rows are cut at data.seq_len words (evaluation keeps whole sentences). Subword encoders (bert, gpt) get
pieces and piece_mask [B, L] and first [B, W] (the piece each position reads) instead of words (`collate_pieces`).
"""

from __future__ import annotations

import collections
import logging
from typing import Sequence

import numpy as np

from .bert_tasks import (CARVE, LABEL_NAMES, SENTENCE_FIELDS, TAG_FIELDS, ExampleBatches, _rows_of, _text, _width,
                         sorted_example_batches)
from .elmo_data import BOUNDARY, char_ids, split_words
from .files import DataError
from .pipeline import Data, eval_batch_size, eval_limit

log = logging.getLogger(__name__)


def _clean(word: str) -> str:
    from .word_vectors import clean_text8

    cleaned = clean_text8(word)
    return cleaned[0] if len(cleaned) == 1 else ""


def word_ids(tokenizer, words: Sequence[str]) -> np.ndarray:
    """Each word's id: its own, its lower-cased form's, its text8-cleaned form's, else <unk>."""
    out = np.empty(len(words), np.int32)
    get, unk = tokenizer.token_to_id, tokenizer.unk_id
    for i, w in enumerate(words):
        j = get(w)
        if j is None:
            j = get(w.lower())
        if j is None and w != BOUNDARY:
            j = get(_clean(w)) if _clean(w) else None
        out[i] = unk if j is None else j
    return out


def task_examples(cfg) -> tuple[dict[str, list[tuple[list[str], object]]], dict]:
    """{split: [(words, label or tag names)]} and {"kind": "classify" | "tag", "labels": names, "scheme"}."""
    d = cfg.data
    data_dir = d.data_dir or None
    if d.dataset in SENTENCE_FIELDS:
        first, second = SENTENCE_FIELDS[d.dataset]

        def split_of(split, limit=0):
            out = []
            for r in _rows_of(d.dataset, split, data_dir, limit):
                words = split_words(_text(r[first]))
                if second is not None:
                    words = words + [BOUNDARY] + split_words(_text(r[second]))
                out.append((words, int(r["label"])))
            return out

        splits = {"train": split_of("train", d.max_examples), "validation": split_of("validation")}
        n = max(y for s in splits.values() for _, y in s) + 1
        return splits, {"kind": "classify", "labels": LABEL_NAMES.get(d.dataset, tuple(map(str, range(n)))),
                        "scheme": "labels", "pairs": second is not None}
    if d.dataset in TAG_FIELDS:
        field, valid = TAG_FIELDS[d.dataset]

        def sentences(split):
            return [([_text(w) for w in r["tokens"]], [_text(t) for t in r[field]])
                    for r in _rows_of(d.dataset, split, data_dir)]

        splits = {"train": sentences("train"), "test": sentences("test")}
        if valid is None:
            splits["validation"], splits["train"] = splits["train"][-CARVE:], splits["train"][:-CARVE]
        else:
            splits["validation"] = sentences(valid)
        if d.max_examples:
            splits["train"] = splits["train"][:d.max_examples]
        names = sorted({t for s in splits.values() for _, tags in s for t in tags})
        return splits, {"kind": "tag", "labels": names, "scheme": "iob" if field == "chunk" else "tags"}
    raise DataError(f"data.dataset={d.dataset!r} is not a downstream task here: use one of "
                    f"{', '.join([*SENTENCE_FIELDS, *TAG_FIELDS])}")


def fit_task_vocabulary(sentences: Sequence[Sequence[str]], min_count: int = 1):
    """<pad>, <unk>, </s>, then the training words seen at least `min_count` times by falling frequency."""
    from .tokenizers import PAD, UNK, WordTokenizer

    counts = collections.Counter(w for s in sentences for w in s)
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in (PAD, UNK, BOUNDARY)),
                   key=lambda w: (-counts[w], w))
    return WordTokenizer([PAD, UNK, BOUNDARY, *words], eos_token=BOUNDARY)


def vectors_vocabulary(path: str):
    """(WordTokenizer of <pad>, <unk>, </s> and the file's words, float32 vectors [V, d] with rows for the three
    specials at 0) from a word2vec-format file."""
    from .tokenizers import PAD, UNK, WordTokenizer
    from .word_vectors import read_word2vec_format

    all_words, all_vectors = read_word2vec_format(path)
    words = [w for w in all_words if w not in (PAD, UNK, BOUNDARY)]
    keep = [i for i, w in enumerate(all_words) if w not in (PAD, UNK, BOUNDARY)]
    table = all_vectors[keep]
    table = np.concatenate([np.zeros((3, table.shape[1]), np.float32), table])
    return WordTokenizer([PAD, UNK, BOUNDARY, *words], eos_token=BOUNDARY), table


def collate_words(examples, rows: int, tokenizer, max_chars: int, cap: int, tagging: bool, index: dict | None):
    """A batch (module docstring) of `rows` rows from (words, label) examples; rows past them are padding."""
    seqs = [[BOUNDARY, *words[:cap], BOUNDARY] for words, _ in examples]
    width = _width([len(s) for s in seqs], cap + 2)
    batch = {"words": np.zeros((rows, width), np.int32), "lengths": np.full(rows, 2, np.int32),
             "labels": np.full((rows, width - 2) if tagging else (rows,), -1, np.int32)}
    if max_chars:
        batch["chars"] = np.zeros((rows, width, max_chars), np.int32)
    for r, (seq, (_, label)) in enumerate(zip(seqs, examples)):
        n = len(seq)
        batch["words"][r, :n], batch["lengths"][r] = word_ids(tokenizer, seq), n
        if max_chars:
            batch["chars"][r, :n] = char_ids(seq, max_chars)
        if tagging:
            batch["labels"][r, :n - 2] = [index[t] for t in label[:n - 2]]
        else:
            batch["labels"][r] = label
    return batch


SUBWORD_ENCODERS = ("bert", "gpt")
MAX_PIECES = 128  # the pre-trained BERT's and GPT's positions here


def collate_pieces(examples, rows: int, tokenizer, cap: int, tagging: bool, index: dict | None, *, last: bool,
                   max_pieces: int = MAX_PIECES):
    """The batch of `collate_words` for a subword model: pieces [B, L] ([CLS] or, for GPT (`last`), [SEP] first;
    the words' pieces; [SEP]), piece_mask [B, L], and at [B, W] the piece that stands for each position of
    </s> w_1..w_n </s>: the opening token, each word's first piece (its last with `last`: a causal model has read the
    whole word there), the closing [SEP]. Pieces past max_pieces - 1 are cut; a cut word points at the closing
    token (its prediction is then as good as that)."""
    from .bert_tasks import _special_ids, word_pieces

    cls_id, sep_id, pad_id = _special_ids(tokenizer)
    seqs = [words[:cap] for words, _ in examples]
    width = _width([len(s) + 2 for s in seqs], cap + 2)
    encoded = []
    for words in seqs:
        ids, at = [sep_id if last else cls_id], [0]
        for pieces in word_pieces(tokenizer, words) if words else []:
            if len(ids) + len(pieces) > max_pieces - 1:
                at.append(-1)
                continue
            at.append(len(ids) + (len(pieces) - 1 if last else 0))
            ids.extend(int(x) for x in pieces)
        ids.append(sep_id)
        at.append(len(ids) - 1)
        encoded.append((ids, [len(ids) - 1 if a < 0 else a for a in at]))
    length = _width([len(ids) for ids, _ in encoded], max_pieces)
    batch = {"pieces": np.full((rows, length), pad_id, np.int32), "piece_mask": np.zeros((rows, length), np.int32),
             "first": np.zeros((rows, width), np.int32), "lengths": np.full(rows, 2, np.int32),
             "labels": np.full((rows, width - 2) if tagging else (rows,), -1, np.int32)}
    for r, ((ids, at), (words, label)) in enumerate(zip(encoded, examples)):
        batch["pieces"][r, :len(ids)], batch["piece_mask"][r, :len(ids)] = ids, 1
        batch["first"][r, :len(at)], batch["lengths"][r] = at, len(at)
        if tagging:
            batch["labels"][r, :len(at) - 2] = [index[t] for t in label[:len(at) - 2]]
        else:
            batch["labels"][r] = label
    return batch


def word_task_data(cfg, tokenizer=None) -> Data:
    """The downstream task of `cfg.data.dataset` as words (module docstring). `Data.info`: kind, labels,
    num_classes, scheme, gold tags per split (tagging), vectors (word2vec's table), ordered(split) batches."""
    d, m = cfg.data, cfg.model
    splits, meta = task_examples(cfg)
    vectors = None
    if tokenizer is None:
        if m.encoder == "word2vec":
            if not m.vectors:
                raise DataError("model.encoder=word2vec needs model.vectors: a word2vec-format file (`lmjax word2vec "
                                "train --out FILE`)")
            tokenizer, vectors = vectors_vocabulary(m.vectors)
        elif m.encoder == "random":
            tokenizer = fit_task_vocabulary([w for w, _ in splits["train"]])
        else:
            raise DataError(f"model.encoder={m.encoder!r} reads the pre-trained run's vocabulary: set train.init_from "
                            "to that run's directory (or data.tokenizer_dir to its tokenizer/)")
    elif m.encoder == "word2vec" and m.vectors:
        _, vectors = vectors_vocabulary(m.vectors)
    tagging = meta["kind"] == "tag"
    index = {t: i for i, t in enumerate(meta["labels"])} if tagging else None
    max_chars = 0
    if m.encoder == "elmo":
        from lmjax.config import get_preset

        max_chars = m.max_chars or get_preset(m.elmo_preset).model.max_chars
    subword = m.encoder in SUBWORD_ENCODERS
    if subword:
        known = [1.0]
    else:
        unk = tokenizer.unk_id
        known = [np.mean(word_ids(tokenizer, w) != unk) for w, _ in splits["validation"][:2000] if w]
    log.info("%s: %d training examples, %.1f%% of validation words in the vocabulary", d.dataset,
             len(splits["train"]), 100 * float(np.mean(known)))

    def make(rows, cap):
        if subword:
            return lambda chunk: collate_pieces(chunk, rows, tokenizer, cap, tagging, index, last=m.encoder == "gpt",
                                                max_pieces=m.max_pieces)
        return lambda chunk: collate_words(chunk, rows, tokenizer, max_chars, cap, tagging, index)

    def train(process_index: int, process_count: int):
        return ExampleBatches(splits["train"], d.batch_size, make(d.batch_size, d.seq_len), seed=d.seed,
                              process_index=process_index, process_count=process_count)

    def ordered(split, process_index=0, process_count=1, limit=None):
        size = eval_batch_size(cfg)
        longest = max(len(w) for w, _ in splits[split])
        return sorted_example_batches(splits[split], size, make(size, longest), process_index=process_index,
                                      process_count=process_count, limit=limit)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        if split not in splits:
            return None
        limit = eval_limit(cfg, max_batches) if split == "train" else None
        return (batch for _, batch in ordered(split, process_index, process_count, limit))

    info = {**meta, "num_classes": len(meta["labels"]), "ordered": ordered, "vectors": vectors,
            "train_size": len(splits["train"]), "in_vocabulary": float(np.mean(known))}
    if tagging:
        info["gold"] = {s: [[index[t] for t in tags] for _, tags in splits[s]] for s in ("validation", "test")}
    return Data(tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, train=train, eval=evaluate, info=info)
