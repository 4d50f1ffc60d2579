"""n-gram LM: probabilities hand-computed on a tiny corpus, queries, CLI and bad input."""

import math

import numpy as np
import pytest

from lmjax.config import ConfigError
from lmjax.data.files import DataError
from lmjax.models.ngram import NGramModel, discounts, main

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
