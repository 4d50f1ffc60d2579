"""Tokenizers with one small interface: text -> int32 ids -> text.

- `CharTokenizer`: one id per character, in nanoGPT's order (the sorted distinct characters).
- `WordTokenizer`: whitespace-separated words by frequency; unknown words become `<unk>`; optionally every line end
  is a token (`<eos>`, the PTB convention).
- `WordPieceTokenizer`, `BPETokenizer`: subwords through HF `tokenizers`, trained in memory or read from BERT's
  vocab.txt / GPT-2's vocab.json + merges.txt.

Each has `encode(text) -> int32[n]`, `decode(ids) -> str`, `vocab_size`, `token_to_id`, `id_to_token`,
`save(directory)` (one `tokenizer.json`) and the special ids `pad_id`, `unk_id`, `bos_id`, `eos_id`, which are None
where the vocabulary has no such token. `load_tokenizer(directory)` restores any of them, and also reads a plain HF
`tokenizer.json`. `build_tokenizer(data_cfg, text)` makes the one a `DataConfig` names.
"""

from __future__ import annotations

import collections
import json
import logging
import os
from pathlib import Path
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from .files import DataError, read_text

TOKENIZER_FILE = "tokenizer.json"
SUBWORD_VOCAB_SIZE = 8192  # wordpiece/bpe vocabulary when DataConfig.vocab_size is 0
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"

log = logging.getLogger(__name__)


class _Tokenizer:
    """What every tokenizer shares: JSON (de)serialisation, equality by it, saving."""

    kind: str
    pad_id: int | None = None
    unk_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None

    def to_json(self) -> str:
        raise NotImplementedError

    def save(self, directory: str | os.PathLike) -> Path:
        """Write `<directory>/tokenizer.json`; `load_tokenizer(directory)` reads it back."""
        path = Path(directory) / TOKENIZER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.to_json() == other.to_json()

    __hash__ = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(_Tokenizer):
    """One id per character; ids follow code-point order, so `fit` matches nanoGPT's `sorted(set(text))`.

    A character outside the vocabulary is a `DataError`, unless the tokenizer has an `unk` character standing in for
    such characters (then they encode as its id, and decode as it).
    """

    kind = "char"

    def __init__(self, chars: str, unk: str | None = None):
        if list(chars) != sorted(set(chars)) or (unk is not None and unk not in chars):
            raise ValueError("chars must be distinct and sorted, and contain unk")
        self.chars, self.unk = chars, unk
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        self.unk_id = None if unk is None else chars.index(unk)

    @classmethod
    def fit(cls, text: str, *, unk: str | None = None) -> CharTokenizer:
        """The distinct characters of `text` (and `unk`, if given), sorted."""
        chars = set(text) | ({unk} if unk is not None else set())
        if not chars:
            raise DataError("cannot fit a character tokenizer on empty text: check the dataset's train split")
        return cls("".join(sorted(chars)), unk)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # one code point per character
        ids = np.searchsorted(self._codes, codes)
        known = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes
        if not known.all():
            if self.unk_id is None:
                char = text[int(np.argmin(known))]
                raise DataError(f"character {char!r} (U+{ord(char):04X}) is not in this tokenizer's "
                                f"{self.vocab_size}-character vocabulary: fit it on text that contains it, "
                                "or give CharTokenizer.fit an unk character")
            ids = np.where(known, ids, self.unk_id)
        return ids.astype(np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._codes[np.asarray(ids, dtype=np.int64)].tobytes().decode("utf-32-le")

    def token_to_id(self, token: str) -> int | None:
        index = self.chars.find(token) if len(token) == 1 else -1
        return None if index < 0 else index

    def id_to_token(self, index: int) -> str:
        return self.chars[index]

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "chars": self.chars, "unk": self.unk})


class WordTokenizer(_Tokenizer):
    """Whitespace-separated words; ids in order: `specials` (plus `<unk>` and `eos_token` if they are not among
    them), then the words by falling frequency, ties alphabetical.

    Words outside the vocabulary encode as `<unk>`, which is always in it. With `eos_token`, every line end of the
    text is that token, and decoding writes it back as a line end: PTB's convention, under which its train split
    has exactly 10,000 types (`<unk>` is already one of its words). `pad_id`, `bos_id` and `eos_id` are the ids of
    `<pad>`, `<bos>` and `eos_token` (else `<eos>`), when present.
    """

    kind = "word"

    def __init__(self, vocab: Sequence[str], *, eos_token: str | None = None):
        if len(set(vocab)) != len(vocab) or UNK not in vocab or (eos_token is not None and eos_token not in vocab):
            raise ValueError(f"vocab must be distinct and contain {UNK} and eos_token")
        self.vocab, self.eos_token = list(vocab), eos_token
        self._ids = {word: i for i, word in enumerate(self.vocab)}
        self.pad_id, self.unk_id, self.bos_id = (self._ids.get(t) for t in (PAD, UNK, BOS))
        self.eos_id = self._ids.get(eos_token or EOS)

    @classmethod
    def fit(cls, text_or_lines: str | Iterable[str], *, min_freq: int = 1, max_size: int = 0,
            specials: Sequence[str] = (PAD, UNK, BOS, EOS), eos_token: str | None = None) -> WordTokenizer:
        """Vocabulary of the words seen at least `min_freq` times, at most `max_size` entries in all (0: no limit).

        `text_or_lines`: one string, or lines (each then ends with `eos_token`, when given).
        """
        if isinstance(text_or_lines, str):
            counts = collections.Counter(cls._split(text_or_lines, eos_token))
        else:
            counts = collections.Counter()
            for line in text_or_lines:
                counts.update(cls._split(line, eos_token, line_end=True))
        vocab = list(dict.fromkeys([*specials, UNK, *([eos_token] if eos_token else [])]))
        taken = set(vocab)
        words = [w for w, c in counts.items() if c >= min_freq and w not in taken]
        words.sort(key=lambda w: (-counts[w], w))
        if max_size:
            words = words[:max(max_size - len(vocab), 0)]
        return cls(vocab + words, eos_token=eos_token)

    @staticmethod
    def _split(text: str, eos_token: str | None, line_end: bool = False) -> list[str]:
        if eos_token is None:
            return text.split()
        return text.replace("\n", f" {eos_token} ").split() + ([eos_token] if line_end else [])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        unk = self.unk_id
        return np.array([self._ids.get(w, unk) for w in self._split(text, self.eos_token)], dtype=np.int32)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        lines, line = [], []
        for i in np.asarray(ids).tolist():
            if self.vocab[i] == self.eos_token:
                lines.append(" ".join(line) + "\n")
                line = []
            else:
                line.append(self.vocab[i])
        return "".join(lines) + " ".join(line)

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def id_to_token(self, index: int) -> str:
        return self.vocab[index]

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "vocab": self.vocab, "eos_token": self.eos_token})


class _HFTokenizer(_Tokenizer):
    """An HF `tokenizers.Tokenizer`; special ids found by their conventional names."""

    ROLES = {"pad_id": ("[PAD]", PAD), "unk_id": ("[UNK]", UNK), "bos_id": (BOS, "<s>", "<|endoftext|>"),
             "eos_id": (EOS, "</s>", "<|endoftext|>")}

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        self.tokenizer = tokenizer
        for role, names in self.ROLES.items():
            setattr(self, role, next((i for i in map(tokenizer.token_to_id, names) if i is not None), None))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> np.ndarray:
        """The ids of `text` alone: a post-processor's special tokens ([CLS] ... [SEP]) are not added."""
        # The batch "fast" path skips character offsets: about 1.5x faster on a long text.
        (encoding,) = self.tokenizer.encode_batch_fast([text], add_special_tokens=False)
        return np.array(encoding.ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """`encode` of each text, in one call (the library's threads share the work)."""
        return [np.array(e.ids, dtype=np.int32)
                for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        return self.tokenizer.decode(np.asarray(ids).tolist(), skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, index: int) -> str:
        return self.tokenizer.id_to_token(index)

    def to_json(self) -> str:
        return self.tokenizer.to_str()


def _as_lines(texts: str | Iterable[str]) -> Iterable[str]:
    """Training input for HF trainers: a string is taken line by line, keeping its line ends."""
    return texts.splitlines(keepends=True) if isinstance(texts, str) else texts


class WordPieceTokenizer(_HFTokenizer):
    """BERT's WordPiece: lowercased (by default), split on whitespace and punctuation, `##` continuation pieces.

    Specials [PAD] [UNK] [CLS] [SEP] [MASK] (ids 0-4 when trained here); `cls_id`, `sep_id` and `mask_id` besides the
    common ones. Decoding does not restore case or the spacing around punctuation.
    """

    kind = "wordpiece"
    SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        super().__init__(tokenizer)
        self.cls_id, self.sep_id, self.mask_id = map(tokenizer.token_to_id, ("[CLS]", "[SEP]", "[MASK]"))

    @staticmethod
    def _pipeline(model: models.Model, lowercase: bool) -> tokenizers.Tokenizer:
        tokenizer = tokenizers.Tokenizer(model)
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()
        return tokenizer

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int, *, lowercase: bool = True,
              min_frequency: int = 2) -> WordPieceTokenizer:
        """Learn a vocabulary of `vocab_size` pieces from `texts` (strings, or one string taken line by line)."""
        tokenizer = cls._pipeline(models.WordPiece(unk_token="[UNK]"), lowercase)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(cls.SPECIALS), show_progress=False)
        tokenizer.train_from_iterator(_as_lines(texts), trainer)
        return cls(tokenizer)

    @classmethod
    def from_vocab_file(cls, vocab_txt: str | os.PathLike, *, lowercase: bool = True) -> WordPieceTokenizer:
        """BERT's `vocab.txt` (one piece per line, id = line number). Its specials ([PAD] [UNK] [CLS] [SEP] [MASK])
        are special tokens, so "[MASK]" written in a text is one id, as in `BertTokenizerFast`."""
        read_text(Path(vocab_txt))  # the same checks and errors as for any data file
        tokenizer = cls._pipeline(models.WordPiece.from_file(os.fspath(vocab_txt), unk_token="[UNK]"), lowercase)
        tokenizer.add_special_tokens([t for t in cls.SPECIALS if tokenizer.token_to_id(t) is not None])
        return cls(tokenizer)


class BPETokenizer(_HFTokenizer):
    """Byte-pair encoding. Byte-level (GPT-2's scheme, the default) encodes any text and decodes it exactly.

    Without `byte_level`, words are split at spaces, SentencePiece-style (a `▁` marks a word start), and characters
    unseen in training become `<unk>`. `<|endoftext|>` is both `bos_id` and `eos_id`, as in GPT-2.
    """

    kind = "bpe"

    @classmethod
    def train(cls, texts: str | Iterable[str], vocab_size: int, *, byte_level: bool = True, min_frequency: int = 2,
              specials: Sequence[str] = ("<|endoftext|>",)) -> BPETokenizer:
        """Learn `vocab_size` tokens from `texts` (strings, or one string taken line by line)."""
        if byte_level:
            tokenizer = tokenizers.Tokenizer(models.BPE())
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            alphabet = pre_tokenizers.ByteLevel.alphabet()  # all 256 bytes, so nothing is ever unknown
        else:
            tokenizer = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
            tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
            tokenizer.decoder = decoders.Metaspace()
            alphabet, specials = [], [UNK, *specials]
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(specials),
                                      initial_alphabet=alphabet, show_progress=False)
        tokenizer.train_from_iterator(_as_lines(texts), trainer)
        return cls(tokenizer)

    @classmethod
    def from_files(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike) -> BPETokenizer:
        """GPT-2's `vocab.json` and `merges.txt` (byte-level, no prefix space)."""
        for path in (vocab_json, merges_txt):
            read_text(Path(path))
        tokenizer = tokenizers.Tokenizer(models.BPE.from_file(os.fspath(vocab_json), os.fspath(merges_txt)))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        return cls(tokenizer)


Tokenizer = CharTokenizer | WordTokenizer | WordPieceTokenizer | BPETokenizer
_HF_KINDS = {"WordPiece": WordPieceTokenizer, "BPE": BPETokenizer}


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """The tokenizer saved in `<directory>/tokenizer.json`: lmjax's own, or any HF WordPiece/BPE tokenizer file."""
    path = Path(directory) / TOKENIZER_FILE
    if not path.is_file():
        raise DataError(f"{path} is missing: save a tokenizer there with tokenizer.save({os.fspath(directory)!r})")
    text = read_text(path)
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}): save the tokenizer again") from None
    kind = spec.get("kind")
    if kind == CharTokenizer.kind:
        return CharTokenizer(spec["chars"], spec["unk"])
    if kind == WordTokenizer.kind:
        return WordTokenizer(spec["vocab"], eos_token=spec["eos_token"])
    model = spec.get("model", {}).get("type")
    if model not in _HF_KINDS:
        raise DataError(f"{path} holds neither an lmjax tokenizer nor an HF WordPiece/BPE one (model {model!r}): "
                        "save the tokenizer again")
    return _HF_KINDS[model](tokenizers.Tokenizer.from_str(text))


def build_tokenizer(data_cfg, text: str) -> Tokenizer:
    """The tokenizer `data_cfg.tokenizer` names ("char", "word", "wordpiece", "bpe"), fitted on `text`.

    "word" is the language-modelling setup: no padding or bos, `<unk>` for words under `data_cfg.min_freq` or past
    `data_cfg.vocab_size` (0: keep all), and `<eos>` at every line end. "wordpiece" and "bpe" (byte-level) learn
    `data_cfg.vocab_size` tokens, 8,192 when it is 0.
    """
    kind = data_cfg.tokenizer
    log.info("fitting the %s tokenizer on %s characters of %s train text", kind, f"{len(text):,}", data_cfg.dataset)
    if kind == "char":
        return CharTokenizer.fit(text)
    if kind == "word":
        return WordTokenizer.fit(text, min_freq=data_cfg.min_freq, max_size=data_cfg.vocab_size,
                                 specials=(UNK, EOS), eos_token=EOS)
    if kind == "wordpiece":
        return WordPieceTokenizer.train(text, data_cfg.vocab_size or SUBWORD_VOCAB_SIZE)
    if kind == "bpe":
        return BPETokenizer.train(text, data_cfg.vocab_size or SUBWORD_VOCAB_SIZE)
    raise DataError(f"unknown tokenizer {kind!r}: set data.tokenizer to one of char, word, wordpiece, bpe")
