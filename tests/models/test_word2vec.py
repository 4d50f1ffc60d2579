"""word2vec: corpus math and Huffman codes against gensim, training (negative sampling, hierarchical softmax) on a
corpus with built-in analogies, formats, bad input."""

from __future__ import annotations

import dataclasses
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import ConfigError
from lmjax.data import DataError
from lmjax.models import word2vec as w2v

gensim = pytest.importorskip("gensim")

ENTITIES, RELATIONS = 8, 3


def analogy_corpus(sentences: int = 6000, seed: int = 0) -> list[list[str]]:
    """Word e{x}r{y} appears with topic words of entity x and marker words of relation y only, so its vector is
    about f(x) + g(y) and e{x}r{0} : e{x}r{1} :: e{x'}r{0} : e{x'}r{1} holds."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(sentences):
        x, y = rng.integers(ENTITIES), rng.integers(RELATIONS)
        words = [f"e{x}r{y}"] + [f"t{x}_{k}" for k in rng.integers(4, size=3)] + [f"m{y}_{k}" for k in
                                                                               rng.integers(4, size=3)]
        out.append([words[i] for i in rng.permutation(len(words))])
    return out


def analogy_questions() -> dict[str, list[tuple[str, str, str, str]]]:
    q = [(f"e{x}r{y}", f"e{x}r{z}", f"e{u}r{y}", f"e{u}r{z}") for x in range(ENTITIES) for u in range(ENTITIES)
         for y in range(RELATIONS) for z in range(RELATIONS) if x != u and y != z]
    return {"synthetic": q}


CFG = w2v.Word2VecConfig(dim=24, window=5, negative=5, sample=0, min_count=1, epochs=3, alpha=0.025,
                         batch_size=64, shared_negatives=16, steps_per_call=4, chunk_words=20_000)


@pytest.fixture(scope="module")
def corpus():
    return analogy_corpus()


@pytest.fixture(scope="module")
def skipgram(corpus):
    return w2v.train(corpus, CFG)


@pytest.mark.parametrize("design", ["skipgram_shared", "cbow_shared", "skipgram_per_example", "skipgram_hs",
                                    "cbow_hs", "cbow_runs", "skipgram_runs"])
def test_training_learns_the_corpus_analogies(corpus, skipgram, design):
    cfg = {"skipgram_shared": CFG, "cbow_shared": dataclasses.replace(CFG, sg=False, alpha=0.05),
           "skipgram_per_example": dataclasses.replace(CFG, shared_negatives=0),
           "skipgram_hs": dataclasses.replace(CFG, hs=True, negative=0),
           "cbow_hs": dataclasses.replace(CFG, hs=True, negative=0, sg=False, alpha=0.05),
           "cbow_runs": dataclasses.replace(CFG, sg=False, alpha=0.05, run=16),
           "skipgram_runs": dataclasses.replace(CFG, run=8)}[design]
    model = skipgram if design == "skipgram_shared" else w2v.train(corpus, cfg)
    assert model.log[-1]["loss_per_example"] < model.log[0]["loss_per_example"]
    result = w2v.evaluate_analogies(model, analogy_questions())
    assert result["coverage"] == 1.0
    assert result["total"] > 0.8, result


def test_training_is_deterministic_for_a_seed(corpus, skipgram):
    again = w2v.train(corpus, CFG)
    np.testing.assert_array_equal(again.vectors, skipgram.vectors)
    other = w2v.train(corpus, dataclasses.replace(CFG, seed=1))
    assert not np.allclose(other.vectors, skipgram.vectors)


def test_hierarchical_softmax_with_negatives_is_deterministic_and_adds_its_loss(corpus):
    cfg = dataclasses.replace(CFG, hs=True, epochs=1)
    a, b = w2v.train(corpus[:600], cfg), w2v.train(corpus[:600], cfg)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    ns = w2v.train(corpus[:600], dataclasses.replace(cfg, hs=False))
    assert a.log[0]["loss_per_example"] > ns.log[0]["loss_per_example"] + 1  # the HS term: ~log2 V bits
    assert not np.allclose(ns.vectors, a.vectors)


def _gensim_codes(counts):
    g = gensim.models.Word2Vec(min_count=1, hs=1, negative=0, vector_size=8)
    g.build_vocab_from_freq({f"w{i}": int(c) for i, c in enumerate(counts)})
    return np.array(g.wv.expandos["count"]), g.wv.expandos["code"], g.wv.expandos["point"]


def test_huffman_tree_is_word2vecs(corpus):
    # counts without ties: one Huffman tree, so gensim's codes and inner-node ids exactly
    counts, codes, points = _gensim_codes(np.random.default_rng(0).integers(1, 10**9, 300))
    ours, our_points, mask = w2v.huffman_tree(counts)
    for i in range(len(counts)):
        np.testing.assert_array_equal(ours[i][mask[i]], codes[i])
        np.testing.assert_array_equal(our_points[i][mask[i]], points[i])
    # the test corpus (many tied counts): a complete prefix code as short as gensim's, frequent words shortest
    vocab = w2v.Vocab.build(corpus, 1)
    codes, points, mask = w2v.huffman_tree(vocab.counts)
    length = mask.sum(1)
    V = len(vocab)
    assert codes.shape == (V, length.max()) and np.all(points[:, 0] == V - 2) and points[mask].max() == V - 2
    assert np.sum(2.0 ** -length) == 1.0 and np.all(np.diff(length) >= 0)
    node_of = {}  # code prefix -> inner node: one node per prefix, V - 1 of them, and no word's code among them
    for c, p, n in zip(codes, points, length):
        for j in range(n):
            assert node_of.setdefault(tuple(c[:j]), p[j]) == p[j]
    full = {tuple(c[:n]) for c, n in zip(codes, length)}
    assert len(full) == V and not full & node_of.keys() and sorted(node_of.values()) == list(range(V - 1))
    gensim_counts, gensim_codes, _ = _gensim_codes(vocab.counts)
    assert length @ vocab.counts == np.array([len(c) for c in gensim_codes]) @ gensim_counts
    assert w2v.huffman_tree(np.array([7]))[2].sum() == 0  # one word: no inner node


def test_subsampling_and_noise_distribution_match_gensim(corpus):
    counts = np.array([1_000_000, 5_000, 10])
    threshold = 1e-3 * counts.sum()
    expected = [(np.sqrt(1e6 / threshold) + 1) * threshold / 1e6, (np.sqrt(5e3 / threshold) + 1) * threshold / 5e3, 1]
    np.testing.assert_allclose(w2v.keep_probability(counts, 1e-3), expected)
    np.testing.assert_array_equal(w2v.keep_probability(counts, 0), 1)
    # gensim stores keep probabilities as sample_int = keep * 2^32 and the cumulative noise table scaled to 2^31 - 1
    g = gensim.models.Word2Vec(min_count=1, sample=1e-2, vector_size=8)
    g.build_vocab(corpus)
    counts = np.array(g.wv.expandos["count"])
    np.testing.assert_allclose(w2v.keep_probability(counts, 1e-2) * 2**32, g.wv.expandos["sample_int"], rtol=1e-6)
    np.testing.assert_allclose(np.cumsum(w2v.noise_distribution(counts)) * (2**31 - 1), g.cum_table, rtol=1e-6)


def test_window_examples_stay_in_window_and_sentence():
    ids = np.arange(10, dtype=np.int32)
    sids = np.array([0] * 6 + [1] * 4, np.int32)
    contexts, valid = w2v.window_examples(ids, sids, 3, np.random.default_rng(0))
    offsets = np.array([-3, -2, -1, 1, 2, 3])
    for i, j in zip(*np.nonzero(valid)):
        assert contexts[i, j] == i + offsets[j] and sids[i] == sids[i + offsets[j]]
    _, adjacent = w2v.window_examples(ids, sids, 1, np.random.default_rng(0))  # window 1: b is always 1
    assert adjacent.sum() == 2 * (5 + 3)


def test_run_windows_are_window_examples():
    """A run covering a whole stream gives window_examples' windows for the same draws of b."""
    ids = np.arange(1, 31, dtype=np.int32)
    sids = np.repeat(np.arange(4, dtype=np.int32), [7, 1, 12, 10])
    w = 4
    contexts, valid = w2v.window_examples(ids, sids, w, np.random.default_rng(3))
    reach = np.random.default_rng(3).integers(1, w + 1, len(ids))
    pad = np.full(w, -1, np.int32)
    centers, run_contexts, run_valid = (np.asarray(a) for a in w2v.run_windows(
        np.concatenate([pad * 0, ids, pad * 0])[None], np.concatenate([pad, sids, pad])[None], reach[None], w))
    np.testing.assert_array_equal(centers, ids)
    np.testing.assert_array_equal(run_valid, valid)
    np.testing.assert_array_equal(np.where(valid, run_contexts, 0), np.where(valid, contexts, 0))


@pytest.mark.parametrize("sg", [False, True])
def test_a_step_on_runs_equals_the_step_on_their_windows(corpus, sg):
    """The runs path (rows gathered once per run, windows through a banded matrix) computes the same SGD step as the
    explicit windows of the same runs, and its runs cover every subsampled position once."""
    cfg = dataclasses.replace(CFG, sg=sg, run=16, sample=1e-2, chunk_words=5000)
    vocab = w2v.Vocab.build(corpus, 1)
    ids, sids = vocab.encode(corpus)
    keep = w2v.keep_probability(vocab.counts, cfg.sample)
    raw, tokens, sentence, reach = next(w2v.epoch_runs(ids, sids, keep, cfg, np.random.default_rng(0)))
    kept = np.random.default_rng(0).random(raw, np.float32) < keep[ids[:raw]]
    real = reach > 0
    assert real.sum() == kept.sum() and (tokens[:, cfg.window:-cfg.window][real] != 0).any()
    np.testing.assert_array_equal(np.sort(tokens[:, cfg.window:-cfg.window][real]), np.sort(ids[:raw][kept]))
    G = cfg.batch_size // cfg.run
    rng = np.random.default_rng(1)
    tables = {name: jnp.asarray(rng.normal(size=(len(vocab), cfg.dim)), jnp.float32) * 0.1 for name in "WC"}
    negs = rng.integers(0, len(vocab), cfg.shared_negatives).astype(np.int32)
    runs = (tokens[:G], sentence[:G], reach[:G])
    centers, contexts, valid = (np.asarray(a) for a in w2v.run_windows(*runs, cfg.window))
    weights = valid.astype(np.float32)
    if not sg:
        weights /= np.maximum(valid.sum(1, keepdims=True), 1)
    on_runs, (loss_runs, n_runs) = w2v._sgd_step(tables, (*runs, 0.05, negs), None, cfg)
    on_windows, (loss, n) = w2v._sgd_step(tables, (centers, contexts, weights, 0.05, negs), None,
                                          dataclasses.replace(cfg, run=0))
    assert int(n_runs) == int(n) > 0
    np.testing.assert_allclose(loss_runs, loss, rtol=1e-5)
    for name in ("W", "C"):
        assert not np.allclose(on_runs[name], tables[name])
        np.testing.assert_allclose(on_runs[name], on_windows[name], atol=1e-6)


def test_merging_replicas_adds_their_changes():
    base = {"W": jnp.ones((3, 2)), "C": jnp.zeros((3, 2))}
    first = {"W": jnp.ones((3, 2)) * 2, "C": jnp.full((3, 2), 0.5)}
    others = [{"W": jnp.ones((3, 2)) * 4, "C": jnp.full((3, 2), -1.0)}, {"W": jnp.zeros((3, 2)), "C": jnp.zeros((3, 2))}]
    new, next_base = w2v._merge_replicas(first, others, base)
    np.testing.assert_allclose(new["W"], 1 + 1 + 3 - 1)  # base + the three changes (+1, +3, -1)
    np.testing.assert_allclose(new["C"], 0.5 - 1)
    assert next_base["W"] is not new["W"] and np.array_equal(next_base["W"], new["W"])


REPLICAS_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
from test_word2vec import CFG, analogy_corpus, analogy_questions
from lmjax.models import word2vec as w2v
corpus = analogy_corpus()
cfg = w2v.Word2VecConfig(**{**CFG.__dict__, "sg": False, "alpha": 0.05, "run": 16, "replicas": 2, "merge_every": 2})
w2v.jax.config.update("jax_num_cpu_devices", 2)
a, b = w2v.train(corpus, cfg), w2v.train(corpus, cfg)
one = w2v.train(corpus, w2v.Word2VecConfig(**{**cfg.__dict__, "replicas": 1}))
print(len(w2v.jax.devices()), np.array_equal(a.vectors, b.vectors), not np.allclose(a.vectors, one.vectors),
      w2v.evaluate_analogies(a, analogy_questions())["total"])
"""


def test_replicas_on_two_cpu_devices_learn_and_are_deterministic():
    """Two CPU devices each train a copy (local SGD, merged every 2 calls each): the same vectors on a rerun, unlike
    one device's, and the corpus analogies are learnt."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", REPLICAS_SCRIPT, str(Path(__file__).parent)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    devices, same, differs, accuracy = out.stdout.split()[-4:]
    assert (devices, same, differs) == ("2", "True", "True") and float(accuracy) > 0.8, out.stdout


@pytest.mark.parametrize("binary", [False, True])
def test_formats_round_trip_with_gensim(skipgram, tmp_path, binary):
    path = tmp_path / ("v.bin" if binary else "v.txt")
    w2v.save_word2vec_format(skipgram, path, binary=binary)
    kv = gensim.models.KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert list(kv.index_to_key) == list(skipgram.words)
    np.testing.assert_array_equal(kv.vectors, skipgram.vectors)
    back = w2v.load_word2vec_format(path)  # format guessed
    np.testing.assert_array_equal(back.vectors, skipgram.vectors)
    theirs = tmp_path / "gensim.bin"
    kv.save_word2vec_format(str(theirs), binary=binary)
    np.testing.assert_array_equal(w2v.load_word2vec_format(theirs, binary=binary).vectors, skipgram.vectors)


def test_queries_and_cli(skipgram, tmp_path, capsys):
    assert skipgram.most_similar(["e0r0"], topn=3)[0][0] != "e0r0"
    assert skipgram.analogy("e0r0", "e0r1", "e1r0", topn=1)[0][0] == "e1r1"
    assert skipgram.similarity("e2r1", "e2r1") == pytest.approx(1.0, abs=1e-5)
    path = tmp_path / "v.bin"
    w2v.save_word2vec_format(skipgram, path, binary=True)
    assert w2v.main(["analogy", str(path), "e0r0", "e0r1", "e1r0", "--topn", "1"]) == 0
    assert capsys.readouterr().out.startswith("e1r1\t")
    assert w2v.main(["similarity", str(path), "e0r0", "nosuchword"]) == 2
    assert "'nosuchword' is not in the vocabulary" in capsys.readouterr().err
    assert w2v.main(["plot", str(path), "e0r0", "e0r1", "e1r0", "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_trains_with_hierarchical_softmax(corpus, tmp_path, capsys):
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(" ".join(s) for s in corpus[:300]))
    args = ["train", "--corpus", str(text), "--out", str(tmp_path / "v.txt"), "--min-count", "1", "--dim", "8",
            "--epochs", "1", "--batch-size", "16", "--steps-per-call", "2", "--negative", "0"]
    assert w2v.main(args) == 2 and "hs=True" in capsys.readouterr().err
    assert w2v.main([*args, "--hs"]) == 0
    assert w2v.load_word2vec_format(tmp_path / "v.txt").vectors.shape[1] == 8


def test_spearman_handles_ties_and_unknown_words(skipgram):
    pairs = [("e0r0", "e0r1", 5.0), ("e0r0", "e1r0", 5.0), ("e0r0", "t0_1", 9.0), ("zzz", "e0r0", 1.0)]
    result = w2v.evaluate_word_pairs(skipgram, pairs)
    assert result["coverage"] == 0.75 and -1 <= result["spearman"] <= 1
    np.testing.assert_array_equal(w2v._ranks(np.array([3.0, 1.0, 3.0])), [1.5, 0.0, 1.5])


def test_bad_input_is_explained():
    with pytest.raises(DataError, match="corpus is empty"):
        w2v.Vocab.build([[], []])
    with pytest.raises(DataError, match="lower min_count"):
        w2v.Vocab.build([["a", "b", "a"]], min_count=3)
    with pytest.raises(ConfigError, match="dim"):
        w2v.Word2VecConfig(dim=0)
    with pytest.raises(ConfigError, match="run=24 must be 0 or a divisor"):
        w2v.Word2VecConfig(run=24)
    with pytest.raises(ConfigError, match="replicas=64 needs as many devices.*jax_num_cpu_devices"):
        w2v.train([["a", "b"]], w2v.Word2VecConfig(min_count=1, replicas=64))
    with pytest.raises(ConfigError, match="negative >= 1.*or hs=True"):
        w2v.Word2VecConfig(negative=0)
    with pytest.raises(ConfigError, match="negative"):
        w2v.Word2VecConfig(negative=-1, hs=True)
    assert w2v.Word2VecConfig(negative=0, hs=True).hs
    with pytest.raises(DataError, match="neither"):
        w2v.load_corpus("/no/such/corpus.txt")
    model = w2v.Word2Vec(w2v.Vocab(("a",), np.array([1])), np.ones((1, 2), np.float32))
    with pytest.raises(KeyError, match="not in the vocabulary"):
        model.similarity("a", "b")


def test_cli_rejects_bad_input_in_one_line(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 20)
    train = ["train", "--corpus", str(corpus), "--min-count", "1", "--dim", "4", "--epochs", "1", "--sample", "0",
             "--batch-size", "8", "--steps-per-call", "2"]

    def one_line(args) -> str:
        assert w2v.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
        return err

    out = ["--out", str(tmp_path / "v")]
    assert "--sg expects true or false, got 'maybe'" in one_line([*train, *out, "--sg", "maybe"])
    assert "--hs expects true or false" in one_line([*train, "--out", str(tmp_path / "v"), "--hs", "2"])
    missing = tmp_path / "missing" / "x.txt"
    assert f"directory {missing.parent} does not exist" in one_line([*train, "--out", str(missing)])  # before training
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert "latin1.txt is not UTF-8 text" in one_line(["train", "--corpus", str(latin1), "--out", str(tmp_path / "v")])
    assert "no vectors file at" in one_line(["neighbours", str(tmp_path / "missing.txt"), "the"])
    assert "does not start with a 'vocab_size dim' line" in one_line(["neighbours", str(corpus), "the"])

    vectors = tmp_path / "v.txt"
    assert w2v.main([*train, "--out", str(vectors), "--sg", "false"]) == 0
    assert w2v.main([*train, "--out", str(tmp_path / "sg.txt"), "--sg"]) == 0  # the flag alone: skip-gram
    assert w2v.load_word2vec_format(vectors).vectors.shape == (5, 4)
    assert not np.array_equal(w2v.load_word2vec_format(vectors).vectors,
                              w2v.load_word2vec_format(tmp_path / "sg.txt").vectors)  # CBOW trained other vectors
    capsys.readouterr()
    assert "--topn=0 is invalid" in one_line(["neighbours", str(vectors), "the", "--topn", "0"])
    assert w2v.main(["neighbours", str(vectors), "the", "--topn", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def test_flag_bool_is_strict():
    assert w2v._flag_bool("sg", "false") is False and w2v._flag_bool("sg", "Yes") is True
    assert w2v._flag_bool("hs", True) is True
    with pytest.raises(ConfigError, match="--sg expects true or false, got 'maybe'"):
        w2v._flag_bool("sg", "maybe")


def test_validated_designs_parse_and_name_their_measurements():
    """Every machine's default design is a valid configuration of the algorithm it is for, and its results file is
    in the repository."""
    root = pathlib.Path(__file__).resolve().parents[2]
    for (machine, sg), (design, where) in w2v.VALIDATED_DESIGNS.items():
        cfg = w2v.Word2VecConfig(sg=sg, **w2v.parse_design(design))
        assert w2v.format_design(cfg) == design, machine
        assert (root / where).is_file(), where
    assert w2v.parse_design("32:128") == {"batch_size": 32, "shared_negatives": 128, "steps_per_call": 16, "run": 0,
                                          "replicas": 1, "merge_every": 8}
    for bad in ("32", "a:b", "1:2:3:4:5:6:7"):
        with pytest.raises(ConfigError, match="is not B:N"):
            w2v.parse_design(bad)


def test_default_design_follows_the_machine():
    assert w2v.default_design(True, "Zen 3")[0] == w2v.VALIDATED_DESIGNS["Zen 3", True][0]
    assert w2v.default_design(False, "Zen 5")[0] == w2v.VALIDATED_DESIGNS["Zen 5", False][0]
    assert "validated on Zen 5" in w2v.default_design(True, "Zen 5")[1]
    design, why = w2v.default_design(False, "Ice Lake", cores=1)
    assert w2v.parse_design(design)["replicas"] == 1 and "no design is validated on Ice Lake" in why
    assert w2v.parse_design(w2v.default_design(True, "Ice Lake", cores=2)[0])["replicas"] == 2


def test_cli_says_which_design_it_trains(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\n" * 20)
    args = ["train", "--corpus", str(corpus), "--min-count", "1", "--dim", "4", "--epochs", "1", "--sample", "0",
            "--out", str(tmp_path / "v.txt")]
    assert w2v.main([*args, "--batch-size", "8", "--steps-per-call", "2"]) == 0
    err = capsys.readouterr().err
    assert "design 8:32:2:0:1:8 " in err and "set by --batch-size, --steps-per-call" in err


def test_small_vocabularies_get_small_steps_and_divergence_is_one_line(tmp_path, capsys):
    design, why = w2v.default_design(True, "Zen 3", vocab_size=11)
    assert design == w2v.SMALL_VOCAB_DESIGNS[True] and "small vocabulary (11 words" in why
    assert w2v.default_design(True, "Zen 3", vocab_size=40_000)[0] == w2v.VALIDATED_DESIGNS["Zen 3", True][0]
    corpus = [["the", "cat", "sat", "on", "the", "mat"]] * 400
    with pytest.raises(ConfigError, match="diverged in epoch 1"):
        w2v.train(corpus, w2v.Word2VecConfig(min_count=1, dim=8, epochs=1, alpha=1e6, batch_size=64,
                                             steps_per_call=2, sample=0))
    text = tmp_path / "c.txt"
    text.write_text("\n".join(" ".join(s) for s in corpus))
    assert w2v.main(["train", "--corpus", str(text), "--out", str(tmp_path / "v.txt"), "--min-count", "1", "--dim",
                     "4", "--epochs", "1"]) == 0
    assert f"design {w2v.SMALL_VOCAB_DESIGNS[True]} " in capsys.readouterr().err
