"""TFDS builders: split sizes against the PROVENANCE counts, contents, the offline stories, one-line errors."""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import lzma
import os
import shutil
import socket
import time
import zipfile

import pytest
import tensorflow_datasets as tfds

from lmjax.data import DATASETS, DataError, load, load_text, prepare
from lmjax.data import builders
from lmjax.data.builders import ASSETS, Conll2000, MovieReviewPolarity, Ptb, UdEnglishEwt

TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

# Counts from each dataset's PROVENANCE.md.
SPLITS = {
    "ptb": {"train": 42_068, "validation": 3_370, "test": 3_761},
    "sst2": {"train": 67_349, "validation": 872, "test": 1_821},
    "rte": {"train": 2_490, "validation": 277, "test": 3_000},
    "multi30k": {"train": 29_000, "validation": 1_014, "test2016": 1_000, "test2017": 1_000, "test2017_mscoco": 461,
                 "test2018": 1_071},
    "ud_english_ewt": {"train": 12_544, "validation": 2_001, "test": 2_077},
    "conll2000": {"train": 8_936, "test": 2_012},
    "movie_review_polarity": {"train": 2_000},
    "movie_review_polarity/sentences": {"train": 10_662},
}


def labels(name, split, data_dir):
    source = load(name, split, data_dir=data_dir)
    return collections.Counter(int(example["label"]) for example in source.__getitems__(list(range(len(source)))))


def test_the_registry_lists_every_dataset():
    assert set(DATASETS) == {"tiny_shakespeare", "ptb", "imdb", "gcide", "multi30k", "sst2", "rte",
                             "movie_review_polarity", "ud_english_ewt", "conll2000"}


@pytest.mark.parametrize("name", SPLITS)
def test_split_sizes_match_the_provenance(name, shared_data):
    info = prepare(name, data_dir=shared_data).info
    assert {split: info.splits[split].num_examples for split in info.splits} == SPLITS[name]


@pytest.mark.parametrize("builder", [Ptb, UdEnglishEwt, Conll2000, MovieReviewPolarity])
def test_download_checksums_match_the_provenance_files(builder, shared_data):
    for file, remote in builder.SOURCES.items():
        data = (shared_data / builder.FOLDER / file).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (remote.size, remote.sha256)


def test_without_a_local_folder_the_source_is_downloaded(tmp_path, monkeypatch, shared_data):
    # The "download" is GLUE's zip layout made from the local files: this runs the download path offline.
    archive = tmp_path / "downloads" / "RTE.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as rte:
        for file in ("train.tsv", "dev.tsv", "test.tsv"):
            rte.write(shared_data / "rte" / file, f"RTE/{file}")
    monkeypatch.setattr(builders, "check_reachable", lambda url, what: None)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", lambda self, url: archive)
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path / "tfds"))
    info = prepare("rte", data_dir=tmp_path).info
    assert {split: info.splits[split].num_examples for split in info.splits} == SPLITS["rte"]


def test_embedded_tiny_shakespeare_is_the_canonical_file():
    data = lzma.decompress((ASSETS / "tinyshakespeare.txt.xz").read_bytes())
    assert hashlib.sha256(data).hexdigest() == TINY_SHAKESPEARE_SHA256


def test_tiny_shakespeare_works_offline_with_no_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("LMJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path))
    parts = [load_text("tiny_shakespeare", split) for split in ("train", "validation", "test")]
    assert [len(part) for part in parts] == [1_003_854, 55_770, 55_770]  # TFDS's 90/5/5 by characters
    assert hashlib.sha256("".join(parts).encode()).hexdigest() == TINY_SHAKESPEARE_SHA256
    assert (tmp_path / "tiny_shakespeare" / "1.0.0").is_dir()


def test_tiny_shakespeare_prefers_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path / "tfds"))
    (tmp_path / "data" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "data" / "tinyshakespeare" / "input.txt").write_text("To be, or not to be?\n" * 10)
    text = "To be, or not to be?\n" * 10
    assert load_text("tiny_shakespeare", "train", data_dir=tmp_path / "data") == text[:int(len(text) * 0.9)]


def test_ptb_text_is_the_file(shared_data):
    for split, file in Ptb.SPLIT_FILES.items():
        assert load_text("ptb", split, data_dir=shared_data) == (shared_data / "ptb" / file).read_text()


def test_glue_labels(shared_data):
    assert labels("sst2", "validation", shared_data) == {1: 444, 0: 428}
    assert labels("sst2", "test", shared_data) == {-1: 1_821}
    assert labels("rte", "validation", shared_data) == {0: 146, 1: 131}  # entailment, not_entailment
    first = load("rte", "train", data_dir=shared_data)[0]
    assert first["sentence1"] == b"No Weapons of Mass Destruction Found in Iraq Yet."


def test_multi30k_pairs_are_aligned(shared_data):
    raw = load("multi30k", "train", data_dir=shared_data)[0]
    tok = load("multi30k/tok", "train", data_dir=shared_data)[0]
    assert raw["en"] == b"Two young, White males are outside near many bushes."
    assert tok["en"] == b"two young , white males are outside near many bushes ."
    assert tok["de"].decode().startswith("zwei junge wei\u00dfe m\u00e4nner")


def test_tagged_sentences(shared_data):
    ud = load("ud_english_ewt", "validation", data_dir=shared_data)
    sentences = ud.__getitems__(list(range(len(ud))))
    assert sum(len(s["tokens"]) for s in sentences) == 25_147  # multiword ranges and empty nodes skipped
    assert all(len(s["tokens"]) == len(s["upos"]) == len(s["xpos"]) for s in sentences)
    assert len({tag for s in sentences for tag in s["upos"]}) == 17
    chunks = load("conll2000", "test", data_dir=shared_data)
    assert sum(len(s["tokens"]) for s in chunks.__getitems__(list(range(len(chunks))))) == 47_377
    assert chunks[0]["chunk"][:3].tolist() == [b"B-NP", b"I-NP", b"I-NP"]


def test_movie_review_folds(shared_data):
    reviews = load("movie_review_polarity", "train", data_dir=shared_data)
    examples = reviews.__getitems__(list(range(len(reviews))))
    assert collections.Counter(int(e["fold"]) for e in examples) == {fold: 200 for fold in range(10)}
    assert collections.Counter(int(e["label"]) for e in examples) == {0: 1_000, 1: 1_000}


@pytest.mark.slow
def test_imdb(shared_data):
    info = prepare("imdb", data_dir=shared_data).info
    assert {split: info.splits[split].num_examples for split in info.splits} == {"train": 25_000, "test": 25_000}
    assert labels("imdb", "test", shared_data) == {0: 12_500, 1: 12_500}
    # The archive holds neg/ then pos/, each by file name: train/pos/0_9.txt comes right after the negatives.
    first_positive = load("imdb", "train", data_dir=shared_data)[12_500]
    assert first_positive["text"].startswith(b"Bromwell High is a cartoon comedy.") and first_positive["label"] == 1


GCIDE = """\

00-database-short
   The Collaborative International Dictionary of English v.0.48

This licence text sits at column 0 and is not an entry.

      A dictionary containing a natural history requires too
      many hands.                                 --Locke.
Coagulate \\Co*ag"u*late\\, v. t. [imp. & p. p. {Coagulated}.]
   To cause (a liquid) to change into a curdlike state; as,
   rennet coagulates milk.
   [1913 Webster]

   2. To curdle. [Obs.]
      [Webster 1913 Suppl.]

C[oe]lenterata \\C[oe]*len`te*ra"ta\\, n. pl. [NL.]
   Animals of the ph[ae]ylum; see {C[oe]lenterate}. Pr[=e]fix
   and caf['e]. [R.]
   [1913 Webster]
"""


def test_gcide_markup_is_stripped(tmp_path, monkeypatch):
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path / "tfds"))
    (tmp_path / "gcide").mkdir()
    (tmp_path / "gcide" / "gcide.dict.dz").write_bytes(gzip.compress(GCIDE.encode("cp1252")))
    entries = load("gcide", "train", data_dir=tmp_path)
    assert [entries[i]["headword"] for i in range(len(entries))] == [b"Coagulate", b"Coelenterata"]
    assert load_text("gcide", "train", data_dir=tmp_path) == (
        "Coagulate, v. t. [imp. & p. p. Coagulated.] To cause (a liquid) to change into a curdlike state; as, "
        "rennet coagulates milk.\n"
        "2. To curdle. [Obs.]\n"
        "Coelenterata, n. pl. [NL.] Animals of the phaeylum; see Coelenterate. Prefix and cafe. [R.]\n")


def test_prepared_data_is_reused_without_the_raw_files(tmp_path, monkeypatch, shared_data):
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path / "tfds"))
    shutil.copytree(shared_data / "rte", tmp_path / "data" / "rte")
    first = load("rte", "test", data_dir=tmp_path / "data")[2_999]
    shutil.rmtree(tmp_path / "data" / "rte")
    (tmp_path / "data" / "rte").mkdir()
    builders._prepared.cache_clear()  # as in a new process
    assert load("rte", "test", data_dir=tmp_path / "data")[2_999] == first


# ------------------------------------------------------------------------------------------------------------ errors


def error(call, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def ptb_folder(tmp_path, monkeypatch, **contents: bytes):
    """A data dir whose ptb/ holds `contents` (file stem -> bytes), with a fresh TFDS cache."""
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path / "tfds"))
    folder = tmp_path / "data" / "ptb"
    folder.mkdir(parents=True)
    for stem, data in contents.items():
        (folder / f"ptb.{stem}.txt").write_bytes(data)
    return tmp_path / "data"


def test_unknown_names(monkeypatch):
    monkeypatch.delenv("LMJAX_DATA_DIR", raising=False)
    assert "tiny_shakespeare, ptb, imdb" in error(load, "wikitext", "train")
    assert "raw, tok" in error(prepare, "multi30k/bpe")
    assert "train, validation, test" in error(load, "tiny_shakespeare", "dev")
    assert "use load()" in error(load_text, "rte", "train")


def test_missing_data_dir(tmp_path, monkeypatch):
    assert "LMJAX_DATA_DIR" in error(load, "ptb", "train", data_dir=tmp_path / "nowhere")
    monkeypatch.setenv("LMJAX_DATA_DIR", str(tmp_path / "nowhere"))
    assert "LMJAX_DATA_DIR" in error(load, "ptb", "train")


def test_missing_dataset_offline_fails_fast(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", offline)
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path / "tfds"))
    message = error(load, "ptb", "train", data_dir=tmp_path)
    assert "not found under" in message and "unreachable" in message and "LMJAX_DATA_DIR" in message


def test_missing_file(tmp_path, monkeypatch):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b" a b \n", test=b" a \n")
    assert "ptb.valid.txt is missing" in error(load, "ptb", "train", data_dir=data_dir)


def test_empty_file(tmp_path, monkeypatch):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b"", valid=b" a \n", test=b" a \n")
    assert "ptb.train.txt is empty" in error(load, "ptb", "train", data_dir=data_dir)


def test_file_not_utf8(tmp_path, monkeypatch):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b" caf\xe9 \n", valid=b" a \n", test=b" a \n")
    assert "ptb.train.txt is not UTF-8" in error(load, "ptb", "train", data_dir=data_dir)


def test_damaged_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path / "tfds"))
    (tmp_path / "conll2000").mkdir()
    (tmp_path / "conll2000" / "conll2000.zip").write_bytes(b"PK\x03\x04 not really a zip")
    assert "conll2000.zip is damaged" in error(load, "conll2000", "train", data_dir=tmp_path)


def test_a_failed_prepare_leaves_nothing_behind(tmp_path, monkeypatch):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b"", valid=b" a \n", test=b" a \n")
    error(load, "ptb", "train", data_dir=data_dir)
    (data_dir / "ptb" / "ptb.train.txt").write_bytes(b" a b \n c \n")
    assert load_text("ptb", "train", data_dir=data_dir) == " a b \n c \n"


# --------------------------------------------------------------------------- the prepared copy follows its raw files


def test_a_changed_raw_file_is_prepared_again(tmp_path, monkeypatch, caplog):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b" a b \n c \n", valid=b" a \n", test=b" a \n")
    assert load_text("ptb", "train", data_dir=data_dir) == " a b \n c \n"
    train = data_dir / "ptb" / "ptb.train.txt"
    train.write_bytes(b" d \n")
    builders._prepared.cache_clear()  # as in a new process
    with caplog.at_level("WARNING", logger="lmjax.data.builders"):
        assert load_text("ptb", "train", data_dir=data_dir) == " d \n"
    notices = [r.getMessage() for r in caplog.records if "out of date" in r.getMessage()]
    assert notices == ["the prepared copy of ptb is out of date (ptb.train.txt changed size (10 -> 4 bytes)): "
                       "preparing it again"]
    assert sorted(p.name for p in (tmp_path / "tfds" / "ptb").iterdir()) == ["1.0.0"]  # the old copy is gone

    # Same size, other bytes: caught by the hash.
    train.write_bytes(b" e \n")
    builders._prepared.cache_clear()
    assert load_text("ptb", "train", data_dir=data_dir) == " e \n"


def test_a_copied_raw_file_is_not_prepared_again(tmp_path, monkeypatch, caplog):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b" a b \n", valid=b" a \n", test=b" a \n")
    load_text("ptb", "train", data_dir=data_dir)
    prepared = next((tmp_path / "tfds" / "ptb").glob("*/ptb-train.array_record*"))
    before = prepared.stat().st_mtime_ns
    train = data_dir / "ptb" / "ptb.train.txt"
    os.utime(train, ns=(train.stat().st_atime_ns, train.stat().st_mtime_ns + 10**9))  # same bytes, a new mtime
    builders._prepared.cache_clear()
    with caplog.at_level("WARNING", logger="lmjax.data.builders"):
        assert load_text("ptb", "train", data_dir=data_dir) == " a b \n"
    assert not caplog.records and prepared.stat().st_mtime_ns == before
    record = json.loads((prepared.parent / builders.SOURCES_RECORD).read_text())
    assert record["files"]["ptb.train.txt"]["mtime_ns"] == train.stat().st_mtime_ns  # no hashing next time


def test_a_copy_prepared_without_a_record_is_checked_by_time(tmp_path, monkeypatch):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b" a b \n", valid=b" a \n", test=b" a \n")
    load_text("ptb", "train", data_dir=data_dir)
    record = next((tmp_path / "tfds" / "ptb").glob(f"*/{builders.SOURCES_RECORD}"))
    record.unlink()  # as an older lmjax left it
    builders._prepared.cache_clear()
    assert load_text("ptb", "train", data_dir=data_dir) == " a b \n"  # nothing newer: kept, and recorded now
    assert record.exists()
    record.unlink()
    train = data_dir / "ptb" / "ptb.train.txt"
    train.write_bytes(b" z \n")
    os.utime(train, ns=(time.time_ns() + 10**9,) * 2)  # written after the copy was prepared
    builders._prepared.cache_clear()
    assert load_text("ptb", "train", data_dir=data_dir) == " z \n"


def test_a_damaged_prepared_copy_is_a_data_error(tmp_path, monkeypatch):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b" a b \n", valid=b" a \n", test=b" a \n")
    load_text("ptb", "train", data_dir=data_dir)
    shard = next((tmp_path / "tfds" / "ptb").glob("*/ptb-train.array_record*"))
    shard.write_bytes(b"truncated")
    builders._prepared.cache_clear()
    message = error(load, "ptb", "train", data_dir=data_dir)
    assert "prepared copy of ptb" in message and "damaged" in message and "delete that directory" in message
    (shard.parent / builders.SOURCES_RECORD).write_text("{not json")
    assert "lmjax_sources.json" in error(load, "ptb", "train", data_dir=data_dir)
    (shard.parent / "dataset_info.json").write_text("{not json")
    assert "damaged" in error(load, "ptb", "train", data_dir=data_dir)


def test_a_raw_file_emptied_after_preparing_is_reported_not_ignored(tmp_path, monkeypatch):
    data_dir = ptb_folder(tmp_path, monkeypatch, train=b" a b \n", valid=b" a \n", test=b" a \n")
    load_text("ptb", "train", data_dir=data_dir)
    (data_dir / "ptb" / "ptb.train.txt").write_bytes(b"")
    builders._prepared.cache_clear()
    assert "ptb.train.txt is empty" in error(load, "ptb", "train", data_dir=data_dir)
    assert not list((tmp_path / "tfds" / "ptb").iterdir())  # the out-of-date copy is not kept beside nothing
