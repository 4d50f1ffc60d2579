"""lm_corpus, the engine's entry point, and the word-embedding evaluation sets."""

from __future__ import annotations

import pytest

from lmjax.config import DataConfig
from lmjax.data import CharTokenizer, DataError, lm_corpus, load_analogies, load_word_pairs


def test_default_corpus_needs_no_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("LMJAX_DATA_DIR", raising=False)
    monkeypatch.setenv("LMJAX_TFDS_DIR", str(tmp_path))
    corpus = lm_corpus(DataConfig())
    assert isinstance(corpus.tokenizer, CharTokenizer) and corpus.tokenizer.vocab_size == 65
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [1_003_854, 55_770, 55_770]
    assert corpus.tokenizer.decode(corpus.train[:14]) == "First Citizen:"


def test_ptb_word_corpus(shared_data):
    corpus = lm_corpus(DataConfig(dataset="ptb", tokenizer="word", data_dir=str(shared_data)))
    assert corpus.tokenizer.vocab_size == 10_000
    # Words plus one <eos> per line (PROVENANCE counts).
    assert [len(corpus.train), len(corpus.valid), len(corpus.test)] == [887_521 + 42_068, 70_390 + 3_370,
                                                                         78_669 + 3_761]


def test_corpus_without_validation_split(shared_data):
    corpus = lm_corpus(DataConfig(dataset="movie_review_polarity/sentences", tokenizer="word",
                                  data_dir=str(shared_data)))
    assert corpus.valid is None and corpus.test is None and len(corpus.train) > 200_000


def test_corpus_errors(shared_data):
    with pytest.raises(DataError, match="not a text corpus"):
        lm_corpus(DataConfig(dataset="rte", data_dir=str(shared_data)))
    with pytest.raises(DataError, match="unknown dataset 'wikitext2'"):
        lm_corpus(DataConfig(dataset="wikitext2"))


def test_analogies(shared_data):
    sections = load_analogies(shared_data)
    assert len(sections) == 14 and sum(map(len, sections.values())) == 19_544
    assert sections["capital-common-countries"][0] == ("Athens", "Greece", "Baghdad", "Iraq")
    assert sum(map(len, load_analogies(shared_data, phrases=True).values())) == 3_218


def test_word_pairs(shared_data):
    wordsim = load_word_pairs("wordsim353", shared_data)
    assert len(wordsim) == 353 and wordsim[0] == ("love", "sex", 6.77)
    assert len(load_word_pairs("simlex999", shared_data)) == 999


def test_eval_set_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("LMJAX_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="LMJAX_DATA_DIR"):
        load_analogies()
    with pytest.raises(DataError, match="wordsim353, simlex999"):
        load_word_pairs("men3000", tmp_path)
    (tmp_path / "word_embedding_eval").mkdir()
    (tmp_path / "word_embedding_eval" / "simlex999.txt").write_text("old\tnew\tvery\n")
    with pytest.raises(DataError, match="line 1 is not 'word1<TAB>word2<TAB>score'"):
        load_word_pairs("simlex999", tmp_path)
