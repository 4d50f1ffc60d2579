"""Parallel text for translation: sentence pairs of every split, and one joint subword vocabulary.

    corpus = parallel_corpus(DataConfig(dataset="multi30k/tok", vocab_size=8000), "de", "en")
    corpus.splits["train"]          # [(source ids, target ids)], int32
    corpus.text["test2016"]         # [(source text, target text)]

The joint vocabulary is a BPE (HF `tokenizers`, SentencePiece-style `▁` word starts, no byte fallback) fitted on the
training sources and targets together, so one table can embed both languages and the output (tied embeddings). The
text is split at spaces only: on Moses-tokenised files such as Multi30k's `lc.norm.tok`, decoding gives back the
tokenised words exactly, the form the references are scored in. Its specials are <unk> (0), <pad>, <bos>, <eos>.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from .files import DataError
from .tokenizers import BOS, EOS, PAD, SUBWORD_VOCAB_SIZE, BPETokenizer

log = logging.getLogger(__name__)

MULTI30K_SPLITS = ("train", "validation", "test2016", "test2017", "test2017_mscoco", "test2018")


@dataclasses.dataclass(frozen=True)
class ParallelCorpus:
    tokenizer: Any  # joint source/target tokenizer
    splits: dict[str, list[tuple[np.ndarray, np.ndarray]]]  # (source ids, target ids) of each split
    text: dict[str, list[tuple[str, str]]]  # the same pairs as text


def fit_joint_bpe(pairs: list[tuple[str, str]], vocab_size: int) -> BPETokenizer:
    """A BPE of `vocab_size` tokens fitted on the sources and targets of `pairs` together."""
    lines = [s for s, _ in pairs] + [t for _, t in pairs]
    return BPETokenizer.train(lines, vocab_size, byte_level=False, specials=(PAD, BOS, EOS))


def encode_lines(tokenizer, lines: list[str]) -> list[np.ndarray]:
    hf = getattr(tokenizer, "tokenizer", None)
    if hf is None:
        return [tokenizer.encode(line) for line in lines]
    return [np.array(e.ids, np.int32) for e in hf.encode_batch_fast(lines, add_special_tokens=False)]


def parallel_corpus(data_cfg, src_lang: str, tgt_lang: str, *, tokenizer=None,
                    splits: tuple[str, ...] = MULTI30K_SPLITS) -> ParallelCorpus:
    """Every split of `data_cfg.dataset` that exists (train and validation must), encoded with `tokenizer`, or with
    a joint BPE of `data_cfg.vocab_size` (8,192 when 0) fitted on train."""
    from .builders import load

    text = {}
    for split in splits:
        try:
            source = load(data_cfg.dataset, split, data_dir=data_cfg.data_dir or None)
        except (KeyError, ValueError, DataError):
            if split in ("train", "validation"):
                raise
            continue
        rows = source.__getitems__(list(range(len(source))))
        text[split] = [(r[src_lang].decode().strip(), r[tgt_lang].decode().strip()) for r in rows]
    if tokenizer is None:
        tokenizer = fit_joint_bpe(text["train"], data_cfg.vocab_size or SUBWORD_VOCAB_SIZE)
        log.info("fitted a joint BPE of %d tokens on %d training pairs", tokenizer.vocab_size, len(text["train"]))
    encoded = {}
    for split, pairs in text.items():
        src = encode_lines(tokenizer, [s for s, _ in pairs])
        tgt = encode_lines(tokenizer, [t for _, t in pairs])
        encoded[split] = list(zip(src, tgt))
    return ParallelCorpus(tokenizer, encoded, text)
