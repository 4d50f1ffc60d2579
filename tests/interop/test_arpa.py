"""ARPA export scored by KenLM itself, and ARPA import."""

import numpy as np
import pytest

from lmjax.data.files import DataError
from lmjax.models.ngram import NGramModel

kenlm = pytest.importorskip("kenlm")

TRAIN = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the cat ate the rat",
         "the rat sat"] * 3 + ["a b c d e f g", "the mat"]
QUERIES = TRAIN + ["the cat sat on the log", "zebra cat", "", "a a a a a the", "the dog ate the cat"]


@pytest.mark.parametrize("order,smoothing", [(3, "kneser_ney"), (4, "add_k")])
def test_kenlm_scores_exported_arpa_like_lmjax(tmp_path, order, smoothing):
    with pytest.warns(UserWarning) if smoothing == "kneser_ney" else _nothing():
        model = NGramModel.fit(TRAIN, order, smoothing, k=0.5)
    path = tmp_path / "m.arpa"
    model.save_arpa(path)
    reference = np.array([kenlm.Model(str(path)).score(q, bos=True, eos=True) for q in QUERIES])
    np.testing.assert_allclose(model.sentence_logprob(QUERIES), reference, atol=1e-4)
    loaded = NGramModel.load_arpa(path)
    assert loaded.order == order and set(loaded.vocab) == set(model.vocab)
    np.testing.assert_allclose(loaded.sentence_logprob(QUERIES), reference, atol=1e-4)


def test_import_rejects_damaged_files(tmp_path):
    bad = tmp_path / "bad.arpa"
    bad.write_text("\\data\\\nngram 1=3\n\n\\1-grams:\n-1\t<unk>\n-1\t<s>\n\\end\\\n")
    with pytest.raises(DataError, match="truncated or damaged"):
        NGramModel.load_arpa(bad)
    with pytest.raises(DataError, match="not an ARPA file"):
        NGramModel.load_arpa(tmp_path.joinpath("x.txt").write_text("hello") and tmp_path / "x.txt")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
