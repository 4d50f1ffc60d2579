"""Tokenizers: round trips, PTB's 10,000-word vocabulary, unknown input, save/load, the config dispatch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tokenizers

from lmjax.config import DataConfig
from lmjax.data import (BPETokenizer, CharTokenizer, DataError, WordPieceTokenizer, WordTokenizer, build_tokenizer,
                        load_text, load_tokenizer)

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n") * 20


@pytest.fixture(scope="module")
def ptb_train(shared_data):
    return load_text("ptb", "train", data_dir=shared_data)


def test_char_tokenizer_uses_nanogpt_order():
    tok = CharTokenizer.fit(TEXT)
    assert tok.chars == "".join(sorted(set(TEXT)))
    ids = tok.encode(TEXT)
    assert ids.dtype == np.int32 and ids.tolist() == [tok.chars.index(c) for c in TEXT]
    assert tok.decode(ids) == TEXT
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (None, None, None, None)


def test_char_tokenizer_unknown_characters():
    with pytest.raises(DataError, match=r"character 'é' \(U\+00E9\) is not in"):
        CharTokenizer.fit("abc").encode("abé")
    tok = CharTokenizer.fit("abc", unk="\ufffd")
    assert tok.vocab_size == 4
    assert tok.decode(tok.encode("abé")) == "ab\ufffd"


def test_char_tokenizer_beyond_the_basic_plane():
    text = "naïve 😀 ok"
    tok = CharTokenizer.fit(text)
    assert tok.vocab_size == len(set(text)) and tok.decode(tok.encode(text)) == text


def test_ptb_vocabulary_is_ten_thousand_words(ptb_train, shared_data):
    tok = build_tokenizer(DataConfig(dataset="ptb", tokenizer="word"), ptb_train)
    assert tok.vocab_size == 10_000
    assert tok.id_to_token(tok.unk_id) == "<unk>" and tok.id_to_token(tok.eos_id) == "<eos>"
    train = tok.encode(ptb_train)
    assert len(train) == 887_521 + 42_068  # words, plus one <eos> per line
    valid_text = load_text("ptb", "validation", data_dir=shared_data)
    valid = tok.encode(valid_text)
    assert (valid == tok.eos_id).sum() == 3_370
    assert (valid == tok.unk_id).sum() == valid_text.split().count("<unk>")  # PTB has no other unknown word


def test_word_tokenizer_vocabulary_and_unknown_words():
    tok = WordTokenizer.fit("b a c a b a\nd", min_freq=2)
    assert tok.vocab == ["<pad>", "<unk>", "<bos>", "<eos>", "a", "b"]  # by count, then alphabetical
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.encode("a c b").tolist() == [4, 1, 5]
    assert WordTokenizer.fit("b a c a b a", max_size=5).vocab[-1] == "a"
    assert WordTokenizer.fit(["x y", "y"], specials=(), eos_token="<eos>").vocab == ["<unk>", "<eos>", "y", "x"]


def test_word_tokenizer_line_ends_round_trip():
    tok = WordTokenizer.fit(" the cat \n the dog \n", specials=("<unk>", "<eos>"), eos_token="<eos>")
    ids = tok.encode(" the dog \n the cat \n")
    assert [tok.id_to_token(i) for i in ids] == ["the", "dog", "<eos>", "the", "cat", "<eos>"]
    assert tok.decode(ids) == "the dog\nthe cat\n"


def test_wordpiece():
    tok = WordPieceTokenizer.train(TEXT, 200)
    assert [tok.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    ids = tok.encode("First Citizen: speak? Famished!")
    assert [tok.id_to_token(i) for i in ids][-3:] == ["famish", "##ed", "[UNK]"]  # no "!" in the training text
    assert tok.decode(ids) == "first citizen : speak? famished [UNK]"


def test_wordpiece_from_bert_vocab_file(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world",
                                                   "##s", ","]) + "\n")
    tok = WordPieceTokenizer.from_vocab_file(tmp_path / "vocab.txt")
    assert tok.encode("Hello, worlds of pain").tolist() == [5, 8, 6, 7, 1, 1]
    assert (tok.cls_id, tok.sep_id, tok.mask_id) == (2, 3, 4)


def test_byte_level_bpe_round_trips_any_text():
    tok = BPETokenizer.train(TEXT, 300)
    assert tok.vocab_size <= 300 and tok.bos_id == tok.eos_id == tok.token_to_id("<|endoftext|>")
    for text in (TEXT, "unseen: ünïcödé 😀\ttabs  and   spaces\n"):
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and tok.decode(ids) == text
    assert len(tok.encode(TEXT)) < len(TEXT) / 2  # merges were learned


def test_sentencepiece_style_bpe_marks_unknown_characters():
    tok = BPETokenizer.train(TEXT, 200, byte_level=False)
    ids = tok.encode("speak 😀")
    assert tok.unk_id in ids.tolist()
    assert tok.decode(tok.encode("speak, speak.")) == "speak, speak."


def test_bpe_from_gpt2_files(tmp_path):
    vocab = {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "he": 5, "ll": 6, "hell": 7, "hello": 8, "Ġhello": 9,
             "<|endoftext|>": 10}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh e\nl l\nhe ll\nhell o\nĠ hello\n")
    tok = BPETokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")
    assert tok.encode("hello hello").tolist() == [8, 9]
    assert tok.decode([8, 9]) == "hello hello" and tok.eos_id == 10


@pytest.mark.parametrize("make", [
    lambda: CharTokenizer.fit(TEXT, unk="?"),
    lambda: WordTokenizer.fit(TEXT, eos_token="<eos>"),
    lambda: WordPieceTokenizer.train(TEXT, 200),
    lambda: BPETokenizer.train(TEXT, 300),
], ids=["char", "word", "wordpiece", "bpe"])
def test_save_and_load(make, tmp_path):
    tok = make()
    tok.save(tmp_path / "tok")
    back = load_tokenizer(tmp_path / "tok")
    assert back == tok and type(back) is type(tok)
    assert back.encode(TEXT).tolist() == tok.encode(TEXT).tolist()
    assert (back.pad_id, back.unk_id, back.bos_id, back.eos_id) == (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id)


def test_load_a_plain_hf_tokenizer_file(tmp_path):
    hf = tokenizers.Tokenizer(tokenizers.models.WordPiece({"[UNK]": 0, "[PAD]": 1, "hello": 2}, unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, WordPieceTokenizer) and (tok.unk_id, tok.pad_id) == (0, 1)
    assert tok.encode("hello bye").tolist() == [2, 0]


def test_load_tokenizer_errors(tmp_path):
    with pytest.raises(DataError, match="tokenizer.json is missing"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(DataError, match="is not valid JSON"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize("kind, cls, size", [
    ("char", CharTokenizer, len(set(TEXT))),
    ("word", WordTokenizer, len(set(TEXT.split())) + 2),  # + <unk>, <eos>
    ("wordpiece", WordPieceTokenizer, 300),
    ("bpe", BPETokenizer, 300),
])
def test_build_tokenizer(kind, cls, size):
    tok = build_tokenizer(DataConfig(tokenizer=kind, vocab_size=300), TEXT)
    assert isinstance(tok, cls)
    assert tok.vocab_size == size if kind in ("char", "word") else 100 < tok.vocab_size <= size


def test_build_tokenizer_limits_and_errors():
    tok = build_tokenizer(DataConfig(tokenizer="word", vocab_size=5, min_freq=1), TEXT)
    assert tok.vocab[:2] == ["<unk>", "<eos>"] and tok.vocab_size == 5
    with pytest.raises(DataError, match="one of char, word, wordpiece, bpe"):
        build_tokenizer(DataConfig(tokenizer="sentencepiece"), TEXT)
