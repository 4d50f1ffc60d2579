"""ELMo's data: words and their characters, and the two streams a bidirectional LM trains on.

    words = split_words("It wasn't bad.")      # ['It', 'was', "n't", 'bad', '.']  (PTB-style: n't and 's split off)
    chars = char_ids(words, max_chars)          # int32 [n, max_chars]: BOW, UTF-8 bytes + 1, EOW, 0-padding
    data = bilm_data(cfg, tokenizer=None)       # the corpus (BERT's: the 50,000 IMDB reviews) as two streams

Corpus: `bert_tasks.corpus_documents` split into sentences (`split_sentences`) and words; every sentence ends with
the boundary word `</s>`, so the text is one stream of words (and, read backwards, `</s>` starts every reversed
sentence). Every `HELD_OUT`-th review is held out, as for BERT: the held-out stream is the evaluation split.

Vocabulary: the softmax predicts the `data.vocab_size` most frequent training words (`<pad>`, `<unk>`, `</s>`
first, then by falling frequency, so a log-uniform sampler over ids fits); any other word is the target `<unk>`,
but its characters still reach the model: inputs are characters (`model.encoder=char`) or vocabulary ids
(`encoder=word`).

Batches: the forward LM walks the stream, the backward LM the reversed stream, each as B contiguous rows T words at
a time (`ContiguousStream`, the same epoch shift for both), so each direction's state carries from batch to batch
along its own reading order, as bilm-tf's two datasets. Keys, all int32 but `reset` and `mask`:
  fwd_chars, bwd_chars [B, T, C] (encoder char) or fwd_words, bwd_words [B, T] (encoder word); fwd_targets,
  bwd_targets [B, T]; reset [B] (training);
  mask [B, T] float (evaluation: `eval_windows`, every word of the held-out stream once).
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Iterable, Sequence

import numpy as np

from .batching import ContiguousStream, eval_windows
from .files import DataError
from .pipeline import Data, eval_batch_size, eval_limit

log = logging.getLogger(__name__)

BOUNDARY = "</s>"
PAD_CHAR, BOW, EOW, BOUNDARY_CHAR = 0, 257, 258, 259  # bytes are 1..256
CHAR_VOCAB = 384  # 260 ids, padded to a multiple of 128

_WORD = re.compile(r"\w+(?=n't\b)|n't\b|'\w+|\w+(?:-\w+)*|[^\w\s]")


def split_words(sentence: str) -> list[str]:
    """PTB-style words: runs of letters and digits (hyphens kept inside), n't and 's-like clitics split off, every
    other character its own word."""
    return _WORD.findall(sentence)


def char_ids(words: Sequence[str], max_chars: int) -> np.ndarray:
    """int32 [len(words), max_chars]: BOW, the word's UTF-8 bytes + 1 (cut to max_chars - 2), EOW, then 0s; the
    boundary word `</s>` is BOW, BOUNDARY_CHAR, EOW."""
    if max_chars < 3:
        raise DataError(f"model.max_chars={max_chars}: a word needs at least 3 character slots (BOW, one, EOW)")
    out = np.zeros((len(words), max_chars), np.int32)
    for i, word in enumerate(words):
        body = [BOUNDARY_CHAR] if word == BOUNDARY else [b + 1 for b in word.encode("utf-8")[:max_chars - 2]]
        out[i, :len(body) + 2] = [BOW, *body, EOW]
    return out


class WordTable:
    """Every distinct word of a corpus (type 0 is `</s>`) with its characters and its softmax id."""

    def __init__(self, tokenizer, max_chars: int):
        self.tokenizer, self.max_chars = tokenizer, max_chars
        self.words: list[str] = [BOUNDARY]
        self._index = {BOUNDARY: 0}

    def ids(self, words: Iterable[str]) -> list[int]:
        index, table = self._index, self.words
        out = []
        for w in words:
            i = index.get(w)
            if i is None:
                i = index[w] = len(table)
                table.append(w)
            out.append(i)
        return out

    def finish(self) -> None:
        """Build the per-type arrays once every word has been seen."""
        self.chars = char_ids(self.words, self.max_chars)
        unk = self.tokenizer.unk_id
        self.targets = np.array([self.tokenizer.token_to_id(w) if self.tokenizer.token_to_id(w) is not None else unk
                                 for w in self.words], np.int32)


def sentences_of(documents: Sequence[str]) -> list[list[str]]:
    from .bert_tasks import split_sentences

    return [split_words(s) for doc in documents for s in split_sentences(doc)]


def fit_vocabulary(sentences: Iterable[Sequence[str]], size: int):
    """The `size` most frequent words (ties alphabetical) after <pad>, <unk> and </s>, as a WordTokenizer."""
    from .tokenizers import PAD, UNK, WordTokenizer

    counts = collections.Counter(w for s in sentences for w in s)
    words = sorted((w for w in counts if w not in (PAD, UNK, BOUNDARY)), key=lambda w: (-counts[w], w))
    return WordTokenizer([PAD, UNK, BOUNDARY, *words[:max(size - 3, 0)]], eos_token=BOUNDARY)


def _stream(table: WordTable, sentences: Iterable[Sequence[str]]) -> np.ndarray:
    ids: list[int] = []
    for s in sentences:
        ids += table.ids(s)
        ids.append(0)
    return np.asarray(ids, np.int32)


def _directions(table: WordTable, fwd: dict, bwd: dict, encoder: str) -> dict[str, np.ndarray]:
    out = {}
    for name, batch in (("fwd", fwd), ("bwd", bwd)):
        if encoder == "char":
            out[f"{name}_chars"] = table.chars[batch["inputs"]]
        else:
            out[f"{name}_words"] = table.targets[batch["inputs"]]
        out[f"{name}_targets"] = table.targets[batch["targets"]]
    return out


class BiLMBatches:
    """Training batches of both directions (module docstring); resumable: `state()` / `restore(state)`."""

    def __init__(self, table: WordTable, stream: np.ndarray, batch_size: int, seq_len: int, *, seed: int,
                 encoder: str = "char", process_index: int = 0, process_count: int = 1):
        self.table, self.encoder = table, encoder
        kw = dict(seed=seed, process_index=process_index, process_count=process_count)
        self.fwd = ContiguousStream(stream, batch_size, seq_len, **kw)
        self.bwd = ContiguousStream(stream[::-1].copy(), batch_size, seq_len, **kw)

    def __iter__(self) -> BiLMBatches:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        fwd, bwd = next(self.fwd), next(self.bwd)
        return _directions(self.table, fwd, bwd, self.encoder) | {"reset": fwd["reset"]}

    def state(self) -> dict:
        return {"fwd": self.fwd.state(), "bwd": self.bwd.state()}

    def restore(self, state: dict) -> None:
        self.fwd.restore(state["fwd"])
        self.bwd.restore(state["bwd"])


def bilm_data(cfg, tokenizer=None) -> Data:
    """ELMo pre-training data (module docstring). `Data.info`: words (training words, `</s>` included), eval_words,
    types, unk_rate (training targets outside the vocabulary), steps_per_epoch, the `WordTable`."""
    from .bert_tasks import HELD_OUT, corpus_documents

    d = cfg.data
    docs = corpus_documents(d.dataset, d.data_dir or None)
    if d.max_examples:
        docs = docs[:d.max_examples]
    train_sents = sentences_of([doc for i, doc in enumerate(docs) if i % HELD_OUT != 0])
    held_sents = sentences_of([doc for i, doc in enumerate(docs) if i % HELD_OUT == 0])
    if tokenizer is None:
        tokenizer = fit_vocabulary(train_sents, d.vocab_size or 32768)
        log.info("ELMo vocabulary: %d words", tokenizer.vocab_size)
    if tokenizer.token_to_id(BOUNDARY) is None or tokenizer.unk_id is None:
        raise DataError(f"the ELMo tokenizer needs the words {BOUNDARY!r} and '<unk>': fit it with "
                        "lmjax.data.elmo_data.fit_vocabulary")
    table = WordTable(tokenizer, cfg.model.max_chars)
    train_stream, held_stream = _stream(table, train_sents), _stream(table, held_sents)
    table.finish()
    unk_rate = float(np.mean(table.targets[train_stream] == tokenizer.unk_id))
    log.info("ELMo corpus: %s training words, %s held out, %s types, %.2f%% <unk> targets", f"{len(train_stream):,}",
             f"{len(held_stream):,}", f"{len(table.words):,}", 100 * unk_rate)

    def train(process_index: int, process_count: int):
        return BiLMBatches(table, train_stream, d.batch_size, d.seq_len, seed=d.seed, encoder=cfg.model.encoder,
                           process_index=process_index, process_count=process_count)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        if split != "validation":
            return None  # the held-out reviews are the one evaluation split
        kw = dict(max_batches=eval_limit(cfg, max_batches), process_index=process_index, process_count=process_count)
        size = eval_batch_size(cfg)
        fwd = eval_windows(held_stream, size, d.seq_len, **kw)
        bwd = eval_windows(held_stream[::-1].copy(), size, d.seq_len, **kw)
        return (_directions(table, f, b, cfg.model.encoder) | {"mask": f["mask"]} for f, b in zip(fwd, bwd))

    steps_per_epoch = (len(train_stream) // d.batch_size - 1) // d.seq_len
    info = {"words": len(train_stream), "eval_words": len(held_stream), "types": len(table.words),
            "unk_rate": unk_rate, "steps_per_epoch": steps_per_epoch, "table": table}
    return Data(tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, train=train, eval=evaluate, info=info)
