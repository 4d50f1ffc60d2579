"""n-gram LM: probabilities hand-computed on a tiny corpus, queries, CLI and bad input."""

import math
import random

import numpy as np
import pytest

from lmjax.config import ConfigError
from lmjax.data.files import DataError
from lmjax.models import ngram
from lmjax.models.ngram import NGramModel, discounts, encode, main

CORPUS = ["a b", "b"]  # padded: <s> a b </s> / <s> b </s>; vocabulary without <s>: <unk> </s> a b


def test_add_k_bigram_matches_hand_computed():
    m = NGramModel.fit(CORPUS, 2, "add_k", k=1.0)
    # c(<s> a)=1, c(<s>)=2: (1+1)/(2+4); c(a b)=1, c(a)=1: 2/5; c(b </s>)=2, c(b)=2: 3/6
    assert m.sentence_logprob("a b") == pytest.approx(math.log10(2 / 6 * 2 / 5 * 3 / 6), abs=1e-6)
    # unseen bigram after a seen context: k / (c(h) + kV); an unseen context is uniform 1/V
    assert m.sentence_logprob("b a") == pytest.approx(math.log10(2 / 6 * 1 / 6 * 1 / 5), abs=1e-6)
    assert m.sentence_logprob("zebra") == pytest.approx(math.log10(1 / 6 * 1 / 4), abs=1e-6)  # OOV -> <unk>


def test_kneser_ney_bigram_matches_hand_computed():
    with pytest.warns(UserWarning, match="fallback"):
        m = NGramModel.fit(CORPUS, 2)
    assert m.discounts == ((0.5, 1.0, 1.5), (0.5, 1.0, 1.5))
    # continuation counts a:1 b:2 </s>:1 (sum 4), gamma = (0.5*2 + 1*1)/4, uniform 1/4 over <unk> </s> a b
    p1 = {"a": 0.5 / 4 + 0.5 / 4, "b": 1 / 4 + 0.5 / 4, "</s>": 0.5 / 4 + 0.5 / 4, "<unk>": 0.5 / 4}
    unigram = dict(zip(m.vocab, 10.0 ** m.logprob[0]))
    assert all(unigram[w] == pytest.approx(p, abs=1e-6) for w, p in p1.items())
    p_a_bos = 0.5 / 2 + 0.5 * p1["a"]  # context <s>: children a, b with count 1; gamma = 0.5*2/2
    p_b_a = 0.5 / 1 + 0.5 * p1["b"]
    p_eos_b = 1 / 2 + 0.5 * p1["</s>"]  # a(b </s>) = 2, D2 = 1; gamma = 1*1/2
    assert m.sentence_logprob("a b") == pytest.approx(math.log10(p_a_bos * p_b_a * p_eos_b), abs=1e-6)
    p_b_bos = 0.5 / 2 + 0.5 * p1["b"]
    # unseen a after b, </s> after a: both back off with their context's gamma 0.5
    assert m.sentence_logprob("b a") == pytest.approx(math.log10(p_b_bos * 0.5 * p1["a"] * 0.5 * p1["</s>"]), abs=1e-6)


def test_discounts_follow_chen_goodman():
    adjusted = np.array([1, 1, 1, 1, 2, 2, 3, 4, 7])  # t1..t4 = 4, 2, 1, 1; Y = 4 / (4 + 2*2)
    assert discounts(adjusted) == pytest.approx((1 - 2 * 0.5 * 2 / 4, 2 - 3 * 0.5 * 1 / 2, 3 - 4 * 0.5 * 1 / 1))


def test_distributions_sum_to_one_and_queries_agree():
    lines = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the cat ate"] * 2
    m = NGramModel.fit(lines, 3, "add_k", k=0.1)
    words = [w for w in m.vocab if w != "<s>"]
    for context in ["the", "the cat", "zebra sat"]:
        nxt = m.next_words(context, k=len(words))
        assert sum(10.0 ** lp for _, lp in nxt) == pytest.approx(1.0, abs=1e-4)
    assert m.next_words("the cat", k=1)[0][0] == "sat"
    assert m.fill_blank("the ___ sat on the mat", ["cat", "on", "mat"])[0][0] == "cat"
    best, a, b = m.compare("the cat sat on the mat", "mat the on sat cat the")
    assert best == "the cat sat on the mat" and a > b
    ppl = m.perplexity(lines)
    assert ppl == pytest.approx(10 ** (-m.sentence_logprob(lines).sum() / sum(len(s.split()) + 1 for s in lines)))


def test_bad_input_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="order must be an integer >= 1"):
        NGramModel.fit(CORPUS, 0)
    with pytest.raises(DataError, match="no words"):
        NGramModel.fit(["", "  "], 2)
    with pytest.raises(DataError, match="literal"):
        NGramModel.fit(["a </s> b"], 2)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        NGramModel.fit_file(latin1, 2)
    with pytest.raises(DataError, match="one blank"):
        NGramModel.fit(CORPUS, 2, "add_k").fill_blank("no blank here")


def test_cli_builds_and_queries(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("the cat sat\nthe dog sat\nthe cat ran\n")
    arpa = str(tmp_path / "m.arpa")
    assert main(["build", str(train), arpa, "--order", "2", "--smoothing", "add_k"]) == 0
    assert main(["compare", arpa, "the cat sat", "sat cat the"]) == 0
    assert capsys.readouterr().out.strip().endswith("more probable: the cat sat")
    assert main(["ppl", arpa, str(train)]) == 0
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    assert main(["ppl", arpa, str(tmp_path / "bad.txt")]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["build", str(train), arpa, "--order", "0"]) == 2


def _split_reference(lines, index):
    """encode's definition: <s> + line.split() with <unk> for unknown words + </s>, positions within sentences."""
    sentences = [[1] + [index.get(w, 0) for w in line.split()] + [2] for line in lines]
    return np.concatenate(sentences), np.concatenate([np.arange(len(s)) for s in sentences])


def test_encode_on_bytes_equals_split_and_maps_unknown_words_to_unk(monkeypatch):
    vocab = ["<unk>", "<s>", "</s>", "a", "ab", "abcdefgh", "abcdefghi", "abcdefghijklmno", "abcdefghijklmnop",
             "x" * 40, "café", "中文", "\x00", "\ud800", "😀"]
    index = {w: i for i, w in enumerate(vocab)}
    lines = ["a ab abc zebra", "abcdefgh abcdefghi abcdefghij abcdefg",  # 8-byte boundary
             "abcdefghijklmno abcdefghijklmnop abcdefghijklmnopq",  # 16 bytes and more: the dictionary
             "x" * 40 + " " + "x" * 41 + " " + "x" * 39, "café cafe 中文 中 😀😀",
             "\x00 \x00\x00 \ud800 \ud800a",
             "", "  ", "a\tab\x1cabcdefgh\x0b\x0c\r\x1f a ", "<unk> UNK"]
    calls, split_ids = [], ngram._split_ids
    monkeypatch.setattr(ngram, "_split_ids", lambda *a: calls.append(1) or split_ids(*a))
    ids, pos = encode(lines, index)
    assert calls and ids.dtype == pos.dtype == np.int32  # ASCII whitespace only: the byte path
    expected = _split_reference(lines, index)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_array_equal(pos, expected[1])
    assert ids[:6].tolist() == [1, 3, 4, 0, 0, 2]  # <s> a ab, then abc and zebra as <unk>, </s>
    calls.clear()
    unicode_spaces = lines + ["a\u3000ab\xa0abcdefgh\u2028zebra"]  # whitespace beyond ASCII: str.split
    ids, pos = encode(unicode_spaces, index)
    assert not calls
    expected = _split_reference(unicode_spaces, index)
    np.testing.assert_array_equal(ids, expected[0])
    np.testing.assert_array_equal(pos, expected[1])
    assert [len(x) for x in encode([], index)] == [0, 0]
    with pytest.raises(DataError, match="literal"):
        encode(["a <s> b"], index)


def test_encode_whitespace_is_str_split_whitespace():
    spaces = {c for c in map(chr, range(0x110000)) if c.isspace()}
    assert {chr(b) for b in ngram._ASCII_SPACES} == {c for c in spaces if c.isascii()}
    assert {c for c in map(chr, range(128, 0x110000)) if ngram._OTHER_SPACES.match(c)} == {
        c for c in spaces if not c.isascii()}
    assert all(f"a{c}b".split() == ["a", "b"] for c in spaces)


def _backoff_reference(model, sentence):
    """The ARPA back-off query, one token at a time over dictionaries of the model's n-grams."""
    table = {tuple(g): (lp, bo) for n in range(1, model.order + 1)
             for g, lp, bo in zip(model.ngrams(n).tolist(), model.logprob[n - 1], model.backoff[n - 1])}
    ids = [1] + [model.index.get(w, 0) for w in sentence.split()] + [2]
    total = 0.0
    for t in range(1, len(ids)):
        history = ids[max(0, t - model.order + 1): t]
        for k in range(len(history) + 1):  # longest n-gram first; back off through the contexts not matched
            if tuple(history[k:]) + (ids[t],) in table:
                total += table[tuple(history[k:]) + (ids[t],)][0]
                break
            total += table.get(tuple(history[k:]), (0.0, 0.0))[1] if k < len(history) else 0.0
    return total


@pytest.mark.filterwarnings("ignore:Kneser-Ney discounts")
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_hashed_scoring_matches_a_plain_backoff_query(order):
    rng = random.Random(order)
    words = [f"w{i}" for i in range(40)]
    train = [" ".join(rng.choices(words[:30], k=rng.randint(1, 12))) for _ in range(300)]  # thousands of n-grams
    test = [" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(50)] + train[:20]
    for m in (NGramModel.fit(train, order), NGramModel.fit(train, order, "add_k", k=0.1)):
        expected = [_backoff_reference(m, s) for s in test]
        np.testing.assert_allclose(m.sentence_logprob(test), expected, rtol=0, atol=1e-4)


def test_cli_rejects_bad_input_in_one_line(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("the cat sat\nthe dog sat\n")
    blank = tmp_path / "blank.txt"
    blank.write_text("  \n\n\t\n")
    arpa = str(tmp_path / "m.arpa")
    assert main(["build", str(train), arpa, "--order", "2", "--smoothing", "add_k"]) == 0
    capsys.readouterr()

    def one_line(args) -> str:
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        return err

    for k in ("-2", "0"):
        assert f"-k={k} is invalid: it must be >= 1" in one_line(["next", arpa, "the", "-k", k])
        assert f"-k={k} is invalid" in one_line(["fill", arpa, "the ___", "-k", k])
    # blank-only input: `ppl` rejects what `build` rejects, with the same line
    assert one_line(["ppl", arpa, str(blank)]) == one_line(["build", str(blank), str(tmp_path / "b.arpa")])
    assert "has no words" in one_line(["ppl", arpa, str(blank)])
    missing = tmp_path / "no" / "such" / "out.arpa"
    assert f"directory {missing.parent} does not exist" in one_line(["build", str(train), str(missing)])
    assert not missing.parent.exists()
    assert main(["next", arpa, "the", "-k", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
