"""Data: TFDS builders (local directory or download), tokenizers, and host-side NumPy batches.

    corpus = lm_corpus(DataConfig(dataset="ptb", tokenizer="word"))   # tokenizer + int32 train/valid/test
    batches = RandomWindows(corpus.train, batch_size=64, seq_len=256, seed=0)
    source = load("sst2", "train")                                     # random access, dicts of NumPy/bytes

Raw files come from `data_dir` / `$LMJAX_DATA_DIR` (laid out like shared/data), else the canonical source;
prepared datasets are cached under `$LMJAX_TFDS_DIR` (default ~/.cache/lmjax/tfds). Problems with the user's files
or settings raise `DataError` with a one-line fix.
"""

from .batching import BucketedPairs, ContiguousStream, RandomWindows, TokenBudgetPairs, eval_windows
from .corpus import LMCorpus, lm_corpus
from .eval_sets import load_analogies, load_word_pairs
from .files import DataError, resolve_data_dir
from .tokenizers import (BPETokenizer, CharTokenizer, Tokenizer, WordPieceTokenizer, WordTokenizer, build_tokenizer,
                         load_tokenizer)

_LAZY = ("DATASETS", "load", "load_text", "prepare")

__all__ = ["BPETokenizer", "BucketedPairs", "CharTokenizer", "ContiguousStream", "DataError", "LMCorpus",
           "RandomWindows", "TokenBudgetPairs", "Tokenizer", "WordPieceTokenizer", "WordTokenizer", "build_tokenizer",
           "eval_windows", "lm_corpus", "load_analogies", "load_tokenizer", "load_word_pairs", "resolve_data_dir",
           *_LAZY]


def __getattr__(name: str):
    # TensorFlow Datasets takes about a second to import; tokenizers and batching do not need it.
    if name in _LAZY:
        from . import builders

        return getattr(builders, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
