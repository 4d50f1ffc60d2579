"""Bengio NNLM: (context, target) batches, the engine trains it, and its nearest-neighbour read-out."""

import dataclasses

import jax
import numpy as np
import pytest

from lmjax.config import get_preset
from lmjax.models.nnlm import NNLMConfig, RandomContexts, contexts, eval_contexts, nearest_neighbours
from lmjax.train.engine import Engine
from lmjax.train.task import Data


def test_contexts_pad_the_start_and_eval_covers_every_position_once():
    stream = np.arange(10, dtype=np.int32)
    batch = contexts(stream, 2, np.array([0, 1, 5]), pad_id=99)
    np.testing.assert_array_equal(batch["inputs"], [[99, 99], [99, 0], [3, 4]])
    np.testing.assert_array_equal(batch["targets"], [0, 1, 5])
    batches = list(eval_contexts(stream, 2, 4, pad_id=99))
    targets = np.concatenate([b["targets"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(targets, stream)
    it = RandomContexts(stream, 2, 4, 99, seed=0)
    first = next(it)
    it.restore({"step": 0})
    np.testing.assert_array_equal(next(it)["inputs"], first["inputs"])  # batch k depends on (seed, k) only


class _Tokens:
    vocab = [f"w{i}" for i in range(12)]

    def token_to_id(self, w):
        return self.vocab.index(w) if w in self.vocab else None

    def id_to_token(self, i):
        return self.vocab[i]


def test_engine_trains_it_and_loss_falls():
    stream = np.tile(np.arange(12, dtype=np.int32), 50)  # the next word is a function of the previous one
    cfg = get_preset("nnlm_smoke", ["optim.lr=1e-2", "optim.warmup_steps=0", "data.batch_size=16"])
    cfg = dataclasses.replace(cfg, model=NNLMConfig(context=2, embed_dim=8, hidden=16, direct=True))
    data = Data(tokenizer=_Tokens(), vocab_size=12, train=lambda i, n: RandomContexts(stream, 2, 16, 0, seed=0),
                eval=lambda i, n, split="validation", max_batches=-1: eval_contexts(stream[:64], 2, 16, 0))
    engine = Engine(cfg, data=data, total_steps=60)
    state = engine.init_state()
    before = engine.evaluate(state.params)["eval_loss"]
    state, _ = engine.train_steps(state, engine.stack_batches(data.train(0, 1), 60))
    after = engine.evaluate(state.params)["eval_loss"]
    assert before == pytest.approx(np.log(12), abs=0.3) and after < 0.3 * before
    shapes = jax.tree_util.tree_map(np.shape, state.params)
    assert shapes["C"]["embedding"] == (12, 8) and shapes["W"]["kernel"] == (16, 12)
    neighbours = nearest_neighbours(state.params, _Tokens(), ["w3", "nope"], k=3)
    assert list(neighbours) == ["w3"] and len(neighbours["w3"]) == 3
    assert all(w != "w3" for w, _ in neighbours["w3"]) and neighbours["w3"][0][1] >= neighbours["w3"][1][1]


def test_word_dropout_drops_whole_context_words():
    import flax.linen as nn

    from lmjax.models.nnlm import NNLM

    ctx = np.array([[1, 2, 3], [4, 5, 6]], np.int32)
    model = NNLM(NNLMConfig(vocab_size=10, context=3, embed_dim=4, hidden=8, word_dropout=0.5))
    params = model.init(jax.random.PRNGKey(0), ctx)["params"]
    table = np.asarray(nn.meta.unbox(params)["C"]["embedding"])
    seen = set()
    for seed in range(4):
        _, state = model.apply({"params": params}, ctx, train=True, rngs={"dropout": jax.random.PRNGKey(seed)},
                               capture_intermediates=True, mutable=["intermediates"])
        words = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0])  # [B, context, m] after word dropout
        for b in range(2):
            for j in range(3):
                kept = np.allclose(words[b, j], 2 * table[ctx[b, j]], rtol=1e-6)  # kept words are scaled by 1 / 0.5
                assert kept or np.all(words[b, j] == 0), "a word vector was partly dropped"
                seen.add(kept)
    assert seen == {True, False}
    eval_logits = model.apply({"params": params}, ctx)  # no dropout at evaluation
    assert np.all(np.isfinite(eval_logits))


def test_tied_output_reuses_the_word_vectors():
    """tied: logits = tanh(x H + d) P C^T + b, with no [hidden, V] matrix U."""
    import flax.linen as nn

    from lmjax.models.nnlm import NNLM

    ctx = np.array([[1, 2], [3, 9]], np.int32)
    model = NNLM(NNLMConfig(vocab_size=10, context=2, embed_dim=4, hidden=8, tied=True))
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), ctx)["params"])
    assert "U" not in params and params["P"]["kernel"].shape == (8, 4) and params["b"].shape == (10,)
    params = jax.tree_util.tree_map(lambda p: p + 0.1, params)  # a nonzero bias too
    C = np.asarray(params["C"]["embedding"])
    x = C[ctx].reshape(2, -1)
    h = np.tanh(x @ np.asarray(params["H"]["kernel"]) + np.asarray(params["H"]["bias"]))
    expected = h @ np.asarray(params["P"]["kernel"]) @ C.T + np.asarray(params["b"])
    np.testing.assert_allclose(model.apply({"params": params}, ctx), expected, rtol=1e-5, atol=1e-5)
