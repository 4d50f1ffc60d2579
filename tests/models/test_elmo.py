"""ELMo: the clipped projected LSTM, the character CNN and highways, the scalar mix and the sampled softmax against
plain math or torch; the biLM's directions, padding invariance and train/feature consistency; its data streams;
and pre-training through the engine with carried state, resumed bit-exactly."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lmjax.config import ConfigError, get_preset
from lmjax.data.elmo_data import (BOUNDARY, BOW, EOW, BiLMBatches, WordTable, char_ids, fit_vocabulary,
                                  split_words)
from lmjax.layers import CharCNN, RecurrentLayer, ScalarMix
from lmjax.models import elmo
from lmjax.ops import charcnn, mixing
from lmjax.ops.losses import log_uniform_log_prob, log_uniform_sample, sampled_softmax_cross_entropy

B, T, I, H, P = 3, 7, 5, 6, 4
LENGTHS = np.asarray([7, 3, 5])


def rand(*shape, seed=0, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstmp_reference(p, xs, lengths, cell_clip, proj_clip):
    """The clipped LSTMP in NumPy, one row and one step at a time."""
    out = np.zeros((xs.shape[0], xs.shape[1], P), np.float32)
    finals = []
    for b in range(xs.shape[0]):
        h, c = np.zeros(P, np.float32), np.zeros(H, np.float32)
        for t in range(lengths[b]):
            z = p["w_ih"] @ xs[b, t] + p["b_ih"] + p["w_hh"] @ h + p["b_hh"]
            i, f, g, o = np.split(z, 4)
            c = np.clip(sigmoid(f) * c + sigmoid(i) * np.tanh(g), -cell_clip, cell_clip)
            h = np.clip(p["w_hr"] @ (sigmoid(o) * np.tanh(c)), -proj_clip, proj_clip)
            out[b, t] = h
        finals.append((h, c))
    return out, finals


def test_clipped_projected_lstm_matches_plain_math_and_torch_without_clipping():
    xs = rand(B, T, I, scale=3.0)  # large inputs, so the clips bite
    for clips, name in (((0.5, 0.3), "clipped"), ((1e6, 1e6), "unclipped")):
        layer = RecurrentLayer("lstm", H, proj=P, cell_clip=clips[0], proj_clip=clips[1])
        params = jax.tree.map(np.asarray, nn.meta.unbox(layer.init(jax.random.key(1), xs))["params"])
        params = {k: v * 4 for k, v in params.items()}
        (h, c), out = layer.apply({"params": params}, xs, lengths=LENGTHS)
        want, finals = lstmp_reference(params, xs, LENGTHS, *clips)
        np.testing.assert_allclose(out, want, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(h, np.stack([f[0] for f in finals]), atol=1e-5)
        np.testing.assert_allclose(c, np.stack([f[1] for f in finals]), atol=1e-5)
        if name == "clipped":
            assert np.abs(want).max() == pytest.approx(0.3) and np.abs(np.stack([f[1] for f in finals])).max() <= 0.5
    rnn = torch.nn.LSTM(I, H, batch_first=True, proj_size=P)  # the unclipped case is torch's proj_size
    with torch.no_grad():
        for ours, theirs in (("w_ih", "weight_ih_l0"), ("w_hh", "weight_hh_l0"), ("b_ih", "bias_ih_l0"),
                             ("b_hh", "bias_hh_l0"), ("w_hr", "weight_hr_l0")):
            getattr(rnn, theirs).copy_(torch.from_numpy(params[ours]))
        theirs, _ = rnn(torch.from_numpy(xs))
    np.testing.assert_allclose(np.asarray(layer.apply({"params": params}, xs)[1]), theirs.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="need a projection"):
        RecurrentLayer("lstm", H, cell_clip=1.0).init(jax.random.key(0), xs)


def test_char_cnn_matches_torch_conv1d_max_pool_highway_and_projection():
    filters = ((1, 3), (2, 4), (3, 5))
    layer = CharCNN(char_vocab=20, char_dim=6, filters=filters, highway=2, proj=7)
    chars = np.random.default_rng(0).integers(0, 20, (2, 3, 9)).astype(np.int32)
    params = jax.tree.map(np.asarray, nn.meta.unbox(layer.init(jax.random.key(0), chars))["params"])
    got = np.asarray(layer.apply({"params": params}, chars))
    assert got.shape == (2, 3, 7)
    e = torch.from_numpy(params["char_embed"][chars.reshape(-1, 9)]).transpose(1, 2)  # [N, d, C]
    feats = []
    for i, (width, n) in enumerate(filters):
        conv = torch.nn.Conv1d(6, n, width)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(params[f"conv_{i}_kernel"]))
            conv.bias.copy_(torch.from_numpy(params[f"conv_{i}_bias"]))
            feats.append(torch.relu(conv(e).max(dim=-1).values).numpy())
    x = np.concatenate(feats, -1)
    for i in range(2):
        g = sigmoid(x @ params[f"highway_{i}_w_g"].T + params[f"highway_{i}_b_g"])
        x = g * np.maximum(x @ params[f"highway_{i}_w_h"].T + params[f"highway_{i}_b_h"], 0) + (1 - g) * x
    want = x @ params["proj"]["kernel"].T + params["proj"]["bias"]
    np.testing.assert_allclose(got.reshape(-1, 7), want, atol=1e-5)
    assert np.all(params["highway_0_b_g"] == -2.0)  # highways start close to carrying their input
    zeros = (np.zeros((12, 12), np.float32), np.zeros(12, np.float32)) * 2
    np.testing.assert_allclose(charcnn.highway(x, *zeros), 0.5 * x, atol=1e-6)  # g = 1/2, relu(0) = 0


def test_scalar_mix_is_gamma_times_a_softmax_weighted_sum_with_optional_masked_layer_norm():
    layers = rand(3, 2, 5, 4)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.float32)
    w, gamma = np.array([0.3, -1.0, 2.0], np.float32), np.float32(1.7)
    s = np.exp(w) / np.exp(w).sum()
    np.testing.assert_allclose(mixing.scalar_mix(layers, w, gamma), gamma * np.tensordot(s, layers, 1), atol=1e-6)
    normed = []
    for h in layers:
        real = h[mask > 0]  # [positions, D]
        normed.append((h - real.mean()) / np.sqrt(real.var() + 1e-12))
    np.testing.assert_allclose(mixing.scalar_mix(layers, w, gamma, mask, layer_norm=True),
                               gamma * np.tensordot(s, np.stack(normed), 1), atol=1e-5)
    assert mixing.scalar_mix_l2(w, 0.01) == pytest.approx(0.01 * float(np.sum(w ** 2)))
    mix = ScalarMix(3)
    variables = mix.init(jax.random.key(0), layers)
    np.testing.assert_allclose(mix.apply(variables, layers), layers.mean(0), atol=1e-6)  # w = 0, gamma = 1 at init
    np.testing.assert_array_equal(ScalarMix(3, top_only=True).apply({}, layers), layers[-1])
    with pytest.raises(ValueError, match="got 2 layers"):
        mix.apply(variables, layers[:2])


def test_sampled_softmax_is_the_corrected_softmax_over_target_and_candidates():
    V, D = 50, 4
    h, kernel, bias = rand(3, D), rand(V, D, seed=1), rand(V, seed=2)
    targets, candidates = np.array([2, 7, 30]), np.array([0, 7, 11, 40])  # 7 hits row 1's target
    got, n = sampled_softmax_cross_entropy(h, targets, kernel, bias, candidates, V)
    log_q = lambda k: np.log(np.log((k + 2) / (k + 1)) / np.log(V + 1))  # noqa: E731
    want = 0.0
    for b in range(3):
        z = [h[b] @ kernel[targets[b]] + bias[targets[b]] - np.log(4) - log_q(targets[b])]
        z += [h[b] @ kernel[s] + bias[s] - np.log(4) - log_q(s) for s in candidates if s != targets[b]]
        want += -(z[0] - np.log(np.sum(np.exp(z))))
    assert float(n) == 3 and float(got) == pytest.approx(want, rel=1e-5)
    draws = np.asarray(log_uniform_sample(jax.random.key(0), 200_000, V))
    freq = np.bincount(draws, minlength=V) / len(draws)
    np.testing.assert_allclose(freq[:5], np.exp(log_uniform_log_prob(jnp.arange(5), V)), rtol=0.03)
    assert draws.min() >= 0 and draws.max() < V


def tiny(**kw) -> elmo.ElmoConfig:
    base = dict(vocab_size=40, max_chars=8, char_dim=3, filters="1:3,2:3", highway=1, proj=P, hidden=H, dropout=0.0)
    return elmo.ElmoConfig(**(base | kw))


def bilm(cfg):
    model = elmo.BiLM(cfg)
    shape = (2, 5, cfg.max_chars) if cfg.encoder == "char" else (2, 5)
    x = jnp.ones(shape, jnp.int32)
    params = nn.meta.unbox(model.init(jax.random.key(0), x, x, elmo.zero_carry(cfg, 2)))["params"]
    return model, params


def layers_of(model, params, inputs, lengths):
    return np.asarray(model.apply({"params": params}, inputs, lengths, method=elmo.BiLM.layers))


@pytest.mark.parametrize("encoder", ["char", "word"])
def test_each_direction_sees_only_its_side_of_the_sentence(encoder):
    cfg = tiny(encoder=encoder)
    model, params = bilm(cfg)
    tok = fit_vocabulary([["a", "b", "c", "d", "e", "f"]], 40)
    words = [["a", "b", "c", "d", "e", "f"]]
    other = [["a", "b", "c", "X", "e", "f"]]  # word 3 (position 4 with the boundary) changed
    base = layers_of(model, params, *elmo.sentence_inputs(cfg, tok, words))
    changed = layers_of(model, params, *elmo.sentence_inputs(cfg, tok, other))
    assert base.shape == (3, 1, 8, 2 * P)
    k = 4
    same = np.isclose(base, changed, atol=1e-7).all(-1)[:, 0]  # [layer, position]
    assert same[0].tolist() == [t != k for t in range(8)]  # the token layer: only the word itself
    fwd_same = np.isclose(base[..., :P], changed[..., :P], atol=1e-7).all(-1)[1:, 0]
    bwd_same = np.isclose(base[..., P:], changed[..., P:], atol=1e-7).all(-1)[1:, 0]
    assert fwd_same[:, :k].all() and not fwd_same[:, k:].any()  # forward: positions before k unchanged
    assert bwd_same[:, k + 1:].all() and not bwd_same[:, :k + 1].any()  # backward: positions after k unchanged


def test_features_do_not_depend_on_the_rest_of_the_batch_and_match_the_training_directions():
    cfg = tiny()
    model, params = bilm(cfg)
    tok = fit_vocabulary([["x"]], 40)
    short, long_ = ["the", "film", "was", "fine"], ["a", "much", "longer", "sentence", "than", "that", "one", "."]
    alone = elmo.embed(model, params, tok, [short])[0]
    batched = elmo.embed(model, params, tok, [long_, short, ["ok"]])
    assert alone.shape == (3, 4, 2 * P)
    np.testing.assert_allclose(batched[1], alone, atol=1e-6)
    # Training's directions: the forward stack over </s> s </s> and the backward over its reversal, from zeros.
    inputs, lengths = elmo.sentence_inputs(cfg, tok, [short])
    reverse = inputs[:, ::-1].copy()
    (fwd_top, bwd_top), _ = model.apply({"params": params}, inputs, reverse, elmo.zero_carry(cfg, 1))
    feats = layers_of(model, params, inputs, lengths)
    np.testing.assert_allclose(feats[-1, 0, :, :P], fwd_top[0], atol=1e-6)
    np.testing.assert_allclose(feats[-1, 0, :, P:], np.asarray(bwd_top[0])[::-1], atol=1e-6)


def test_words_chars_and_the_two_streams():
    assert split_words("It wasn't bad, it's \"great\"!") == ["It", "was", "n't", "bad", ",", "it", "'s", '"',
                                                            "great", '"', "!"]
    assert split_words("a well-made film") == ["a", "well-made", "film"]
    ids = char_ids(["ab", BOUNDARY, "é", "abcdefghij"], 6)
    assert ids[0].tolist() == [BOW, ord("a") + 1, ord("b") + 1, EOW, 0, 0]
    assert ids[1, :3].tolist() == [BOW, 259, EOW]
    assert ids[2, :4].tolist() == [BOW, 0xC3 + 1, 0xA9 + 1, EOW]  # UTF-8 bytes
    assert ids[3].tolist() == [BOW, *(ord(c) + 1 for c in "abcd"), EOW]  # cut to max_chars - 2
    sentences = [["w%d" % (i % 9) for i in range(j, j + 5)] for j in range(40)]
    tok = fit_vocabulary(sentences, 8)  # <pad> <unk> </s> + the 5 most frequent
    assert tok.vocab[:3] == ["<pad>", "<unk>", BOUNDARY] and tok.vocab_size == 8
    table = WordTable(tok, 6)
    stream = np.asarray([i for s in sentences for i in [*table.ids(s), 0]], np.int32)
    table.finish()
    batches = BiLMBatches(table, stream, 2, 4, seed=3)
    first = [next(batches) for _ in range(3)]
    assert set(first[0]) == {"fwd_chars", "bwd_chars", "fwd_targets", "bwd_targets", "reset"}
    assert first[0]["reset"].all() and not first[1]["reset"].any()
    # The backward stream is the text read right to left: its targets are the previous words.
    words = np.array(table.words)
    back = words[stream[::-1]]
    got = "".join(chr(c - 1) for c in first[0]["bwd_chars"][0, 0] if 0 < c < 257)
    assert got in set(back)
    assert table.targets[table.ids([BOUNDARY])[0]] == tok.token_to_id(BOUNDARY)
    state = batches.state()
    after = next(batches)
    again = BiLMBatches(table, stream, 2, 4, seed=3)
    again.restore(state)
    for key, value in next(again).items():
        np.testing.assert_array_equal(value, after[key])


def test_config_errors_name_the_fix():
    with pytest.raises(ConfigError, match="WIDTH:COUNT"):
        tiny(filters="3x4").validate()
    with pytest.raises(ConfigError, match="wider than model.max_chars"):
        tiny(filters="1:2,9:2").validate()
    with pytest.raises(ConfigError, match="model.encoder"):
        tiny(encoder="bytes").validate()


def test_pretraining_runs_through_the_engine_and_resumes_bit_exactly(tmp_path, shared_data):
    """elmo_smoke on real reviews: both directions learn (eval losses fall below the uniform log V), and a run
    stopped at step 10 and resumed gives every later loss of an uninterrupted one, carried states included."""
    from lmjax.train.loop import train

    def cfg(workdir, **kw):
        c = get_preset("elmo_smoke", [f"data.data_dir={shared_data}"])
        return dataclasses.replace(c, train=dataclasses.replace(
            c.train, workdir=str(workdir), progress=False, tensorboard=False, plot=False, **kw))

    whole = train(cfg(tmp_path / "whole", checkpoint_every=5))
    train(cfg(tmp_path / "split", checkpoint_every=5), stop_after=10)
    resumed = train(cfg(tmp_path / "split", checkpoint_every=5))
    assert dict(resumed.losses) == {s: v for s, v in whole.losses if s > 10}
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed.state.carry),
                 jax.device_get(whole.state.carry))
    final = whole.engine.evaluate(whole.state.params)
    assert final["eval_fwd_loss"] < np.log(512) and final["eval_bwd_loss"] < np.log(512)
    assert final["eval_loss"] == pytest.approx((final["eval_fwd_loss"] + final["eval_bwd_loss"]) / 2, rel=1e-5)
    info = whole.engine.data.info
    assert info["words"] > 10_000 and 0 < info["unk_rate"] < 0.5
    # `lmjax elmo-features` writes the run's features of a text file, one row per word, as elmo.embed gives them.
    from lmjax.cli import main as cli

    text = tmp_path / "in.txt"
    text.write_text("The film was a hit.\n\nHe sat by the bank of the river.\n", encoding="utf-8")
    out = tmp_path / "feats.npz"
    assert cli(["elmo-features", "elmo_smoke", str(text), str(out), "--set", f"train.workdir={tmp_path / 'whole'}",
                "--set", f"data.data_dir={shared_data}"]) == 0
    z = np.load(out)
    assert z["offsets"].tolist() == [0, 6, 6, 15] and z["features"].shape == (15, 3, 32)
    want = elmo.embed(whole.engine.task.model, whole.state.params, whole.engine.data.tokenizer,
                      [split_words("He sat by the bank of the river.")])[0]
    np.testing.assert_allclose(z["features"][6:].transpose(1, 0, 2), want, atol=1e-5)
    assert cli(["elmo-features", "rnn_smoke", str(text), str(out)]) != 0  # not an ELMo preset: a one-line error
