"""A language-modelling corpus as the engine wants it: a fitted tokenizer and int32 token streams."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from lmjax.config import DataConfig

from .tokenizers import Tokenizer, build_tokenizer

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LMCorpus:
    """Token streams of a text dataset; `valid` / `test` are None where the dataset lacks that split."""

    tokenizer: Tokenizer
    train: np.ndarray
    valid: np.ndarray | None
    test: np.ndarray | None


def lm_corpus(data_cfg: DataConfig, tokenizer: Tokenizer | None = None) -> LMCorpus:
    """`data_cfg.dataset`'s splits (see `lmjax.data.load_text`), tokenized by `data_cfg.tokenizer` fitted on train,
    or by `tokenizer` when given (a resumed run's saved one: refitting need not give the same ids).

    The default, tiny_shakespeare, works offline with no data directory (lmjax embeds it). The first use prepares
    the dataset under `$LMJAX_TFDS_DIR`; later ones read it from there.
    """
    from .builders import load_text, prepare  # TensorFlow Datasets takes a second to import; only this needs it

    data_dir = data_cfg.data_dir or None
    splits = prepare(data_cfg.dataset, data_dir=data_dir).info.splits
    texts = {split: load_text(data_cfg.dataset, split, data_dir=data_dir) if split in splits else None
             for split in ("train", "validation", "test")}
    tokenizer = tokenizer or build_tokenizer(data_cfg, texts["train"])
    log.info("tokenizing %s (%s characters)", data_cfg.dataset, f"{sum(len(t) for t in texts.values() if t):,}")
    streams = {split: None if text is None else tokenizer.encode(text) for split, text in texts.items()}
    return LMCorpus(tokenizer, streams["train"], streams["validation"], streams["test"])
