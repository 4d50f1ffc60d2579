"""BERT's data: pre-training documents and batches, and the fine-tuning tasks' inputs.

    data = pretraining_data(cfg, tokenizer=None)   # documents -> instances (bert_pretraining) -> masked batches
    data = sentence_pair_data(cfg, tokenizer)      # SST-2 (one sentence) or RTE (a pair): [CLS] A [SEP] (B [SEP])
    data = tagging_data(cfg, tokenizer)            # UD EWT UPOS or CoNLL-2000 chunks: a label on each word's first piece

Pre-training corpus (`data.dataset`): "imdb" reads the 50,000 IMDB reviews (train and test; none of the fine-tuning
tasks' text), each review a document split into sentences at ".", "!" or "?" before a capital or a digit, `<br />`
breaks included. Every `HELD_OUT`-th review (index 0, 100, 200, ...) is held out: its instances, masked once with a
fixed seed, are the evaluation split; the rest are training documents, from which the tokenizer is fitted when no
tokenizer is given. Instances (`create_instances`, one pass: dupe_factor 1) are made once; each training batch gets
fresh masks (`dynamic_mask`) drawn from `np.random.default_rng([seed, epoch, index])`, so a resumed run sees the
same batches; with `model.dupe_factor` N > 0, masking is static instead, N masked copies as the reference.

Batches (all int32 but the float weights; B rows, T = data.seq_len):
  pre-training: tokens, segments, mask [B, T]; masked_positions, masked_ids, masked_weights [B, P];
                nsp_labels [B] (1 = random next); real [B] (0 marks a padding row of the last evaluation batch)
  sentence (pair): tokens, segments, mask [B, W]; labels [B] (-1 marks a padding row)
  tagging: tokens, segments, mask [B, W]; labels [B, W] (the word's tag at its first piece, -1 elsewhere)
W is the batch's longest row rounded up to 16, 32, 64, ... (at most data.seq_len in training): a few shapes only.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Callable, Sequence

import numpy as np

from .batching import _process_rows
from .bert_pretraining import PretrainingConfig, Specials, create_instances, dynamic_mask, to_arrays
from .files import DataError
from .pipeline import Data, eval_batch_size

log = logging.getLogger(__name__)

HELD_OUT = 100  # every 100th pre-training document is held out for the MLM / NSP evaluation
EVAL_MASK_SEED = 20190524  # the held-out instances' one fixed masking
WIDTH_MULTIPLE = 16

_BREAK = re.compile(r"<br\s*/?>", re.I)
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*(?=\s+[\"'(\[]*[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A review's sentences: split at line breaks (and `<br />`), then after ".", "!" or "?" (closing quotes and
    brackets kept) where the next word starts with a capital or a digit; empty pieces dropped."""
    out = []
    for line in _BREAK.sub("\n", text).split("\n"):
        start = 0
        for match in _SENTENCE_END.finditer(line):
            out.append(line[start:match.end()].strip())
            start = match.end()
        out.append(line[start:].strip())
    return [s for s in out if s]


def corpus_documents(dataset: str, data_dir=None) -> list[str]:
    """The pre-training corpus as raw documents, in a fixed order (read once per process and data directory)."""
    from .files import resolve_data_dir, tfds_dir

    if dataset != "imdb":
        raise DataError(f"data.dataset={dataset!r} is not a BERT pre-training corpus here: use imdb (the 50,000 "
                        "IMDB reviews)")
    root, prepared = resolve_data_dir(data_dir), tfds_dir()
    rows = [row for split in ("train", "test") for row in _all_rows(dataset, split, root, prepared)]
    return [row["text"].decode("utf-8") for row in rows]


def _encode_many(tokenizer, texts: Sequence[str]) -> list[np.ndarray]:
    encode_batch = getattr(tokenizer, "encode_batch", None)
    if encode_batch is not None:
        return encode_batch(list(texts))
    return [np.asarray(tokenizer.encode(t), np.int32) for t in texts]


def _specials(tokenizer) -> Specials:
    if not hasattr(tokenizer, "id_to_token") or getattr(tokenizer, "mask_id", None) is None:
        raise DataError("BERT pre-training needs a WordPiece tokenizer with [CLS], [SEP] and [MASK]: set "
                        "data.tokenizer=wordpiece")
    return Specials.from_vocab([tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size)])


def pretraining_config(cfg) -> PretrainingConfig:
    m = cfg.model
    return PretrainingConfig(max_seq_length=cfg.data.seq_len, masked_lm_prob=m.mlm_prob,
                             max_predictions_per_seq=m.max_predictions, dupe_factor=max(1, m.dupe_factor),
                             whole_word=m.whole_word_mask, seed=cfg.data.seed)


def _tokenised_documents(tokenizer, docs: Sequence[str]) -> list[list[np.ndarray]]:
    sentences = [split_sentences(d) for d in docs]
    flat = _encode_many(tokenizer, [s for doc in sentences for s in doc])
    out, at = [], 0
    for doc in sentences:
        out.append(flat[at:at + len(doc)])
        at += len(doc)
    return out


class PretrainingBatches:
    """Training batches of pre-training instances: each epoch a permutation by `default_rng([seed, epoch])`, cut
    into full batches; dynamic masks per batch (or the instances' static ones). Resumable: (epoch, index)."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, pcfg: PretrainingConfig, specials: Specials,
                 *, dynamic: bool, seed: int, process_index: int = 0, process_count: int = 1):
        self.arrays, self.batch_size, self.pcfg, self.specials = arrays, batch_size, pcfg, specials
        self.dynamic, self.seed, self.epoch, self.index = dynamic, seed, 0, 0
        self.n = len(arrays["input_ids"])
        if self.n < batch_size:
            raise DataError(f"{self.n} pre-training instances make no batch of {batch_size}: lower data.batch_size")
        self._rows = _process_rows(batch_size, process_index, process_count)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.index >= self.n // self.batch_size:
            self.epoch, self.index = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        chunk = np.sort(order[self.index * self.batch_size:(self.index + 1) * self.batch_size])
        rng = np.random.default_rng([self.seed, self.epoch, self.index])
        self.index += 1
        batch = _pretraining_batch({k: v[chunk] for k, v in self.arrays.items()}, self.pcfg, self.specials,
                                   rng if self.dynamic else None)
        return {k: v[self._rows] for k, v in batch.items()}

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def _pretraining_batch(rows: dict[str, np.ndarray], pcfg: PretrainingConfig, specials: Specials,
                       rng: np.random.Generator | None) -> dict[str, np.ndarray]:
    if rng is not None:
        rows = {**rows, **dynamic_mask(rows["input_ids"], rows["input_mask"], pcfg, specials, rng)}
    return {"tokens": rows["input_ids"].astype(np.int32), "segments": rows["segment_ids"].astype(np.int32),
            "mask": rows["input_mask"].astype(np.int32), "masked_positions": rows["masked_lm_positions"],
            "masked_ids": rows["masked_lm_ids"], "masked_weights": rows["masked_lm_weights"],
            "nsp_labels": rows["next_sentence_labels"].astype(np.int32),
            "real": (rows["input_mask"].sum(1) > 0).astype(np.int32)}


def _padded(arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """`arrays` with zero rows appended up to `rows` (all-zero input_mask: padding rows that count for nothing)."""
    extra = rows - len(arrays["input_ids"])
    return {k: np.concatenate([v, np.zeros((extra, *v.shape[1:]), v.dtype)]) for k, v in arrays.items()}


def pretraining_data(cfg, tokenizer=None) -> Data:
    """BERT pre-training data (module docstring). `Data.info`: specials, words (whitespace words of the corpus),
    train/eval documents and instances, and the pre-training config."""
    from .tokenizers import WordPieceTokenizer

    d, m = cfg.data, cfg.model
    if m.whole_word_mask and m.dupe_factor == 0:
        raise DataError("model.whole_word_mask needs static masking: set model.dupe_factor to the number of masked "
                        "copies (e.g. 5); dynamic masking (dupe_factor 0) takes single pieces")
    docs = corpus_documents(d.dataset, d.data_dir or None)
    if d.max_examples:
        docs = docs[:d.max_examples]
    held = [doc for i, doc in enumerate(docs) if i % HELD_OUT == 0]
    train_docs = [doc for i, doc in enumerate(docs) if i % HELD_OUT != 0]
    words = sum(len(doc.split()) for doc in docs)
    if tokenizer is None:
        if d.tokenizer != "wordpiece":
            raise DataError(f"data.tokenizer={d.tokenizer!r}: BERT pre-training fits a WordPiece vocabulary "
                            "(data.tokenizer=wordpiece)")
        log.info("fitting a %d-piece WordPiece vocabulary on %d documents (%s words)", d.vocab_size or 8192,
                 len(train_docs), f"{words:,}")
        tokenizer = WordPieceTokenizer.train((s for doc in train_docs for s in split_sentences(doc)),
                                             d.vocab_size or 8192)
    specials = _specials(tokenizer)
    pcfg = pretraining_config(cfg)
    dynamic = m.dupe_factor == 0
    train_instances = create_instances(_tokenised_documents(tokenizer, train_docs), pcfg, specials, mask=not dynamic)
    arrays = to_arrays(train_instances, pcfg)
    eval_cfg = PretrainingConfig(**{**pcfg.__dict__, "dupe_factor": 1, "seed": EVAL_MASK_SEED})
    eval_arrays = to_arrays(create_instances(_tokenised_documents(tokenizer, held), eval_cfg, specials), eval_cfg)
    log.info("pre-training instances: %d train (%s masking), %d held out", len(arrays["input_ids"]),
             "dynamic" if dynamic else f"static x{pcfg.dupe_factor}", len(eval_arrays["input_ids"]))

    def train(process_index: int, process_count: int):
        return PretrainingBatches(arrays, d.batch_size, pcfg, specials, dynamic=dynamic, seed=d.seed,
                                  process_index=process_index, process_count=process_count)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        if split != "validation":
            return None  # the held-out documents are the one evaluation split
        from .pipeline import eval_limit

        size, limit = eval_batch_size(cfg), eval_limit(cfg, max_batches)
        rows = _process_rows(size, process_index, process_count)
        starts = list(range(0, len(eval_arrays["input_ids"]), size))[:limit]

        def batches():
            for start in starts:
                chunk = _padded({k: v[start:start + size] for k, v in eval_arrays.items()}, size)
                batch = _pretraining_batch(chunk, pcfg, specials, None)
                yield {k: v[rows] for k, v in batch.items()}

        return batches()

    info = {"specials": specials, "words": words, "documents": len(docs), "train_documents": len(train_docs),
            "train_instances": len(arrays["input_ids"]), "eval_instances": len(eval_arrays["input_ids"]),
            "fill": float(arrays["input_mask"].mean()),  # real tokens per position of the training instances
            "pretraining": pcfg}
    return Data(tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, train=train, eval=evaluate, info=info)


# ------------------------------------------------------------------------------------------------ fine-tuning inputs


def truncate_longest_first(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """HF's "longest_first" truncation (tokenizers' LongestFirst) of a and b to at most `budget` ids in all.

    The shorter sequence keeps its n_s ids and the longer keeps budget - n_s, unless n_s exceeds half the budget:
    then the shorter keeps budget // 2 and the longer the rest (A counts as the shorter on a tie). Ids are dropped
    from the ends."""
    la, lb = len(a), len(b)
    if la + lb <= budget:
        return a, b
    short = min(la, lb)
    keep_short = short if 2 * short <= budget else budget // 2
    keep_long = budget - keep_short
    la, lb = (keep_long, keep_short) if la > lb else (keep_short, keep_long)
    return a[:la], b[:lb]


def _special_ids(tokenizer) -> tuple[int, int, int]:
    cls_id, sep_id, pad_id = (getattr(tokenizer, name, None) for name in ("cls_id", "sep_id", "pad_id"))
    if None in (cls_id, sep_id, pad_id):
        raise DataError("BERT inputs need a tokenizer with [CLS], [SEP] and [PAD] tokens: use a WordPieceTokenizer "
                        "trained by lmjax or read from BERT's vocab.txt")
    return cls_id, sep_id, pad_id


def encode_pairs(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None, max_len: int
                 ) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, segment ids) of [CLS] A [SEP] (B [SEP]) per example, truncated longest-first to max_len, unpadded."""
    cls_id, sep_id, _ = _special_ids(tokenizer)
    if pairs is not None and len(pairs) != len(texts):
        raise ValueError(f"got {len(texts)} texts and {len(pairs)} pairs: give one pair per text")
    specials = 2 if pairs is None else 3
    if max_len < specials:
        raise ValueError(f"max_len={max_len} leaves no room for the {specials} special tokens: use max_len > "
                         f"{specials}")
    enc_a = _encode_many(tokenizer, texts)
    enc_b = None if pairs is None else _encode_many(tokenizer, pairs)
    out = []
    for i, ids_a in enumerate(enc_a):
        a = list(ids_a)
        b = [] if enc_b is None else list(enc_b[i])
        a, b = truncate_longest_first(a, b, max_len - specials)
        first = [cls_id, *a, sep_id]
        row = first + ([] if enc_b is None else [*b, sep_id])
        out.append((np.asarray(row, np.int32), np.asarray([0] * len(first) + [1] * (len(row) - len(first)),
                                                          np.int32)))
    return out


def bert_inputs(tokenizer, texts: Sequence[str], pairs: Sequence[str] | None = None, *,
                max_len: int) -> dict[str, np.ndarray]:
    """BERT's inputs for a batch: [CLS] A [SEP] (B [SEP]), truncated longest-first to `max_len` and right-padded.

    Returns "tokens" int32 [N, max_len] (padding: the tokenizer's [PAD] id), "segments" int32 (0 for [CLS] A [SEP],
    1 for B [SEP], 0 on padding) and "mask" bool (True at real tokens): HF's tokenizer(texts, pairs,
    truncation=True, padding="max_length", max_length=max_len) as input_ids, token_type_ids and attention_mask.
    """
    _, _, pad_id = _special_ids(tokenizer)
    rows = encode_pairs(tokenizer, texts, pairs, max_len)
    n = len(rows)
    tokens = np.full((n, max_len), pad_id, np.int32)
    segments = np.zeros((n, max_len), np.int32)
    mask = np.zeros((n, max_len), bool)
    for i, (ids, segs) in enumerate(rows):
        tokens[i, :len(ids)], segments[i, :len(ids)], mask[i, :len(ids)] = ids, segs, True
    return {"tokens": tokens, "segments": segments, "mask": mask}


def word_pieces(tokenizer, words: Sequence[str]) -> list[np.ndarray]:
    """Each word's WordPiece ids (a word the tokenizer drops entirely, e.g. a control character, becomes [UNK], so
    every word has a first piece)."""
    unk = tokenizer.unk_id
    return [ids if len(ids) else np.asarray([unk], np.int32) for ids in _encode_many(tokenizer, list(words))]


def align_tags(tokenizer, words: Sequence[str], tags: Sequence[int], max_len: int
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """[CLS] pieces [SEP] of a sentence and labels aligned to them: a word's tag at its first piece, -1 at its other
    pieces and at [CLS]/[SEP]. Pieces past max_len - 2 are cut; returns (ids, labels, words kept)."""
    cls_id, sep_id, _ = _special_ids(tokenizer)
    ids, labels, kept = [cls_id], [-1], 0
    for pieces, tag in zip(word_pieces(tokenizer, words), tags):
        if len(ids) + len(pieces) > max_len - 1:
            break
        ids.extend(int(p) for p in pieces)
        labels.extend([int(tag)] + [-1] * (len(pieces) - 1))
        kept += 1
    return np.asarray(ids + [sep_id], np.int32), np.asarray(labels + [-1], np.int32), kept


def _width(lengths: Sequence[int], cap: int) -> int:
    """The smallest of 16, 32, 64, ... that holds the longest row, at most `cap`; a row longer than `cap`
    (evaluation keeps whole sentences) sets the width exactly. Few widths: few compilations."""
    longest = max(lengths, default=1)
    width = WIDTH_MULTIPLE
    while width < longest:
        width *= 2
    return min(width, max(cap, longest))


def collate(examples: Sequence[tuple[np.ndarray, np.ndarray, Any]], rows: int, pad_id: int, cap: int,
            tagging: bool) -> dict[str, np.ndarray]:
    """Right-padded batch of `rows` rows from (ids, segments or per-piece labels, label) examples; rows past the
    examples are padding (label -1, mask 0); the width is `_width`'s."""
    width = _width([len(e[0]) for e in examples], cap)
    batch = {"tokens": np.full((rows, width), pad_id, np.int32), "segments": np.zeros((rows, width), np.int32),
             "mask": np.zeros((rows, width), np.int32),
             "labels": np.full((rows, width) if tagging else (rows,), -1, np.int32)}
    for r, (ids, second, label) in enumerate(examples):
        n = len(ids)
        batch["tokens"][r, :n], batch["mask"][r, :n] = ids, 1
        if tagging:
            batch["labels"][r, :n] = second
        else:
            batch["segments"][r, :n], batch["labels"][r] = second, label
    return batch


class ExampleBatches:
    """Training batches: each epoch a permutation by `np.random.default_rng([seed, epoch])`, cut into full batches,
    collated; this process's rows. Resumable: (epoch, index of the next batch)."""

    def __init__(self, examples, batch_size: int, make: Callable[[list], dict], *, seed: int, process_index: int = 0,
                 process_count: int = 1):
        if len(examples) < batch_size:
            raise DataError(f"{len(examples)} training examples make no batch of {batch_size}: lower "
                            "data.batch_size")
        self.examples, self.batch_size, self.make, self.seed, self.epoch, self.index = (
            examples, batch_size, make, seed, 0, 0)
        self._rows = _process_rows(batch_size, process_index, process_count)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self.index >= len(self.examples) // self.batch_size:
            self.epoch, self.index = self.epoch + 1, 0
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.examples))
        chunk = order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
        self.index += 1
        batch = self.make([self.examples[i] for i in chunk])
        return {k: v[self._rows] for k, v in batch.items()}

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def sorted_example_batches(examples, batch_size: int, make: Callable[[list], dict], *, process_index: int = 0,
                           process_count: int = 1, limit: int | None = None):
    """Every example once, in order of length (few shapes, little padding); the last batch padded with empty rows.
    Yields (indices of the examples, batch)."""
    rows = _process_rows(batch_size, process_index, process_count)
    order = np.argsort([len(e[0]) for e in examples], kind="stable")
    for b, start in enumerate(range(0, len(order), batch_size)):
        if limit is not None and b >= limit:
            return
        chunk = order[start:start + batch_size]
        batch = make([examples[i] for i in chunk])
        yield chunk, {k: v[rows] for k, v in batch.items()}


# GLUE-style sentence (pair) tasks: dataset -> (first text field, second or None)
SENTENCE_FIELDS = {"sst2": ("sentence", None), "rte": ("sentence1", "sentence2")}
LABEL_NAMES = {"sst2": ("negative", "positive"), "rte": ("entailment", "not_entailment")}
# tagging tasks: dataset -> (tag field, validation split or None = the last CARVE training sentences)
TAG_FIELDS = {"ud_english_ewt": ("upos", "validation"), "conll2000": ("chunk", None)}
CARVE = 500  # CoNLL-2000 has no validation split: its last 500 training sentences are held out for one


def _rows_of(dataset: str, split: str, data_dir, limit: int = 0) -> list[dict]:
    """The first `limit` (0 = all) examples of a split, read once per process (callers do not modify them)."""
    from .files import resolve_data_dir, tfds_dir

    rows = _all_rows(dataset, split, resolve_data_dir(data_dir), tfds_dir())
    return list(rows if not limit else rows[:limit])


@functools.lru_cache(maxsize=16)
def _all_rows(dataset: str, split: str, data_dir, prepared_dir) -> tuple[dict, ...]:
    from .builders import load

    source = load(dataset, split, data_dir=data_dir)
    return tuple(source.__getitems__(list(range(len(source)))))


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def sentence_pair_data(cfg, tokenizer=None) -> Data:
    """SST-2 or RTE for BERT (`SENTENCE_FIELDS`): the first `data.max_examples` (0 = all) training examples,
    shuffled per epoch; the validation split (the GLUE dev set; "train" scores the training examples). The tokenizer
    is the pre-trained run's (or `data.tokenizer_dir`'s)."""
    d = cfg.data
    if d.dataset not in SENTENCE_FIELDS:
        raise DataError(f"data.dataset={d.dataset!r} is not a sentence task: use one of {', '.join(SENTENCE_FIELDS)}")
    if tokenizer is None:
        raise DataError("BERT fine-tuning needs the pre-trained tokenizer: set train.init_from to the pre-training "
                        "run or data.tokenizer_dir to its tokenizer/ directory")
    first, second = SENTENCE_FIELDS[d.dataset]
    _, _, pad_id = _special_ids(tokenizer)
    data_dir = d.data_dir or None

    def examples(split: str, limit: int = 0):
        rows = _rows_of(d.dataset, split, data_dir, limit)
        texts = [_text(r[first]) for r in rows]
        pairs = None if second is None else [_text(r[second]) for r in rows]
        labels = [int(r["label"]) for r in rows]
        # Evaluation keeps every token it can (up to the position table); training truncates to data.seq_len.
        enc = encode_pairs(tokenizer, texts, pairs, d.seq_len if split == "train" else cfg.model.max_position)
        return [(ids, segs, y) for (ids, segs), y in zip(enc, labels)], texts, pairs

    train_examples, _, _ = examples("train", d.max_examples)
    dev_examples, dev_texts, dev_pairs = examples("validation")
    labels = np.array([e[2] for e in dev_examples])
    num_classes = int(max(max(e[2] for e in train_examples), labels.max())) + 1

    def make(rows):
        return lambda chunk: collate(chunk, rows, pad_id, d.seq_len, tagging=False)

    def train(process_index: int, process_count: int):
        return ExampleBatches(train_examples, d.batch_size, make(d.batch_size), seed=d.seed,
                              process_index=process_index, process_count=process_count)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        if split not in ("validation", "train"):
            return None  # GLUE test labels are hidden
        from .pipeline import eval_limit

        size = eval_batch_size(cfg)
        chosen = dev_examples if split == "validation" else train_examples
        return (batch for _, batch in sorted_example_batches(
            chosen, size, make(size), process_index=process_index, process_count=process_count,
            limit=eval_limit(cfg, max_batches) if split == "train" else None))

    majority = float(np.bincount(labels, minlength=num_classes).max() / len(labels))
    return Data(tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, train=train, eval=evaluate,
                info={"num_classes": num_classes, "pad_id": pad_id, "train_size": len(train_examples),
                      "labels": LABEL_NAMES.get(d.dataset, tuple(map(str, range(num_classes)))),
                      "eval_size": len(dev_examples), "majority_eval_accuracy": majority, "pairs": second is not None})


def tagging_data(cfg, tokenizer=None) -> Data:
    """UD English EWT UPOS or CoNLL-2000 chunk tags for BERT (`TAG_FIELDS`): one example per sentence, its tag on each
    word's first WordPiece (`align_tags`). Splits: "validation" (EWT's dev; CoNLL-2000's last `CARVE` training
    sentences, then not trained on) and "test". `Data.info`: "labels" (tag names, id order), "words" per split."""
    d = cfg.data
    if d.dataset not in TAG_FIELDS:
        raise DataError(f"data.dataset={d.dataset!r} is not a tagging task: use one of {', '.join(TAG_FIELDS)}")
    if tokenizer is None:
        raise DataError("BERT fine-tuning needs the pre-trained tokenizer: set train.init_from to the pre-training "
                        "run or data.tokenizer_dir to its tokenizer/ directory")
    field, valid_split = TAG_FIELDS[d.dataset]
    _, _, pad_id = _special_ids(tokenizer)
    data_dir = d.data_dir or None

    def sentences(split):
        rows = _rows_of(d.dataset, split, data_dir)
        return [([_text(w) for w in r["tokens"]], [_text(t) for t in r[field]]) for r in rows]

    splits = {"train": sentences("train"), "test": sentences("test")}
    if valid_split is None:
        splits["validation"] = splits["train"][-CARVE:]
        splits["train"] = splits["train"][:-CARVE]
    else:
        splits["validation"] = sentences(valid_split)
    if d.max_examples:
        splits["train"] = splits["train"][:d.max_examples]
    names = sorted({t for sents in splits.values() for _, tags in sents for t in tags})
    index = {t: i for i, t in enumerate(names)}

    def encode(split, max_len):
        out = []
        for words, tags in splits[split]:
            ids, labels, kept = align_tags(tokenizer, words, [index[t] for t in tags], max_len)
            out.append((ids, labels, kept))
        return out

    encoded = {"train": encode("train", d.seq_len)}
    for split in ("validation", "test"):  # every word scored: as long as the position table allows
        encoded[split] = encode(split, cfg.model.max_position)
        cut = sum(len(w) for w, _ in splits[split]) - sum(e[2] for e in encoded[split])
        if cut:
            log.warning("%s %s: %d words past model.max_position pieces are not scored", d.dataset, split, cut)

    def make(rows):
        return lambda chunk: collate(chunk, rows, pad_id, d.seq_len, tagging=True)

    def train(process_index: int, process_count: int):
        return ExampleBatches(encoded["train"], d.batch_size, make(d.batch_size), seed=d.seed,
                              process_index=process_index, process_count=process_count)

    def ordered(split, process_index=0, process_count=1, limit=None):
        size = eval_batch_size(cfg)
        return sorted_example_batches(encoded[split], size, make(size), process_index=process_index,
                                      process_count=process_count, limit=limit)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        if split not in ("validation", "test"):
            return None
        return (batch for _, batch in ordered(split, process_index, process_count))

    info = {"labels": names, "num_classes": len(names), "pad_id": pad_id, "ordered": ordered,
            "gold": {s: [[index[t] for t in tags] for _, tags in splits[s]] for s in ("validation", "test")},
            "words": {s: sum(len(w) for w, _ in sents) for s, sents in splits.items()},
            "scheme": "iob" if field == "chunk" else "tags"}
    return Data(tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, train=train, eval=evaluate, info=info)
