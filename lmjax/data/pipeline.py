"""What a task trains and evaluates on: a `Data` bundle of tokenizer, sizes and resumable batch iterators, and the
builders the language-model tasks share.

    data = lm_data(cfg, tokenizer=None)         # random windows for training, every window of validation for eval
    data = stream_data(cfg, tokenizer=None)     # contiguous rows for models that carry state (truncated BPTT)

`Data.train(process_index, process_count)` returns a resumable iterator of host-local NumPy batches (`state()` /
`restore(state)`); `Data.eval(process_index, process_count, split)` a fresh, deterministic iterable of evaluation
batches of `split` ("validation" or "test"), rows that are padding marked by a zero "mask". `Data.info` carries what
the task needs from the data beyond the tokenizer (special ids, a second tokenizer, class counts, sizes), so no task
reloads or caches a corpus of its own.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "test")


@dataclasses.dataclass
class Data:
    tokenizer: Any
    vocab_size: int
    train: Callable[[int, int], Any] | None
    eval: Callable[..., Any] | None = None  # (process_index, process_count, split="validation") -> batches
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def eval_batch_size(cfg) -> int:
    """The global batch of evaluation: data.eval_batch_size, or data.batch_size when that is 0."""
    return cfg.data.eval_batch_size or cfg.data.batch_size


def eval_limit(cfg, max_batches: int | None) -> int | None:
    """How many evaluation batches to score: -1 means `train.eval_batches` (0 there = all), None all of them."""
    return (cfg.train.eval_batches or None) if max_batches == -1 else max_batches


def _window_eval(cfg, corpus):
    """`Data.eval` over a corpus's validation or test stream: every window of it (`eval_windows`), or the first
    `eval_limit` of them; None for a split the corpus lacks."""
    from .batching import eval_windows

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        stream = corpus.test if split == "test" else corpus.valid
        if stream is None:
            return None
        return eval_windows(stream, eval_batch_size(cfg), cfg.data.seq_len, max_batches=eval_limit(cfg, max_batches),
                            process_index=process_index, process_count=process_count)

    return evaluate


def lm_data(cfg, tokenizer=None) -> Data:
    """Language-model data: random windows of `data.seq_len` for training; for evaluation every window of the
    requested split (the first `train.eval_batches` of them during training, spread over the split; all of them when
    `train.eval_batches` is 0)."""
    from .batching import RandomWindows
    from .corpus import lm_corpus

    corpus = lm_corpus(cfg.data, tokenizer)
    d = cfg.data

    def train(process_index: int, process_count: int):
        return RandomWindows(corpus.train, d.batch_size, d.seq_len, seed=d.seed,
                             process_index=process_index, process_count=process_count)


    has_eval = corpus.valid is not None or corpus.test is not None
    return Data(tokenizer=corpus.tokenizer, vocab_size=corpus.tokenizer.vocab_size, train=train,
                eval=_window_eval(cfg, corpus) if has_eval else None, info={"splits": corpus})


def stream_data(cfg, tokenizer=None) -> Data:
    """Data for models that carry their state across batches (truncated backpropagation through time): B contiguous
    rows walked `data.seq_len` tokens at a time for training (`ContiguousStream`, a "reset" at each epoch's start),
    and the evaluation split laid out the same way (`eval_windows`: contiguous rows, every token once)."""
    from .batching import ContiguousStream
    from .corpus import lm_corpus

    corpus = lm_corpus(cfg.data, tokenizer)
    d = cfg.data

    def train(process_index: int, process_count: int):
        return ContiguousStream(corpus.train, d.batch_size, d.seq_len, process_index=process_index,
                                process_count=process_count)


    steps_per_epoch = (len(corpus.train) // d.batch_size - 1) // d.seq_len
    return Data(tokenizer=corpus.tokenizer, vocab_size=corpus.tokenizer.vocab_size, train=train,
                eval=_window_eval(cfg, corpus), info={"steps_per_epoch": steps_per_epoch, "splits": corpus})


def document_lm_data(cfg, tokenizer=None) -> Data:
    """GPT-1-style pretraining data from a dataset of documents (IMDB reviews): every document preceded by the
    tokenizer's [SEP] (the delimiter the classifier inputs then use as start and extract token), `<br />` tags as
    spaces, all of train as one stream of random windows; every tenth test document held out for the eval loss
    (the first `train.eval_batches` batches, spread over it); `data.max_examples` > 0 keeps the first N documents
    of each. The tokenizer is fitted on the train documents unless given."""
    import numpy as np

    from .batching import RandomWindows, eval_windows
    from .builders import load
    from .classification import separator_id
    from .tokenizers import build_tokenizer

    d = cfg.data
    data_dir = d.data_dir or None

    def documents(split: str, every: int) -> list[str]:
        source = load(d.dataset, split, data_dir=data_dir)
        indices = list(range(0, len(source), every))
        out = []
        for start in range(0, len(indices), 4096):
            rows = source.__getitems__(indices[start:start + 4096])
            out += [row["text"].decode("utf-8").replace("<br />", " ") for row in rows]
        return out

    docs = {"train": documents("train", 1), "test": documents("test", 10)}
    if d.max_examples:  # the first N documents of each (a quick run)
        docs = {split: texts[:d.max_examples] for split, texts in docs.items()}
    tokenizer = tokenizer or build_tokenizer(d, "\n".join(docs["train"]))
    sep = separator_id(tokenizer)
    log.info("tokenizing %s (%s)", d.dataset, ", ".join(f"{split} {len(t):,} documents" for split, t in docs.items()))
    streams = {split: np.concatenate([np.concatenate([[sep], tokenizer.encode(t)]) for t in texts]).astype(np.int32)
               for split, texts in docs.items()}

    def train(process_index: int, process_count: int):
        return RandomWindows(streams["train"], d.batch_size, d.seq_len, seed=d.seed, process_index=process_index,
                             process_count=process_count)

    def evaluate(process_index: int, process_count: int, split: str = "validation", max_batches: int | None = -1):
        return eval_windows(streams["test"], eval_batch_size(cfg), d.seq_len, max_batches=eval_limit(cfg, max_batches),
                            process_index=process_index, process_count=process_count)

    return Data(tokenizer=tokenizer, vocab_size=tokenizer.vocab_size, train=train, eval=evaluate,
                info={"train_documents": len(docs["train"]), "eval_documents": len(docs["test"]),
                      "train_tokens": len(streams["train"])})
