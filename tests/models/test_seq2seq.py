import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lmjax.config import ConfigError, get_preset
from lmjax.models import seq2seq
from lmjax.ops.losses import token_cross_entropy

PAD, BOS, EOS, V = 0, 2, 3, 10  # ids 4..9 are the copy task's symbols


def tiny(attention: str, readout: int = 0) -> seq2seq.Seq2Seq:
    return seq2seq.Seq2Seq(seq2seq.Seq2SeqConfig(src_vocab_size=V, tgt_vocab_size=V, embed=16, hidden=32,
                                                 attention=attention, attention_dim=16, dropout=0.0, init_scale=0.1,
                                                 readout=readout))


def copy_batch(rng, batch=32, length=6):
    """Sources of 1..length-1 random symbols; the target is the source itself."""
    lengths = rng.integers(1, length, batch)
    src = np.where(np.arange(length)[None] < lengths[:, None], rng.integers(4, V, (batch, length)), PAD)
    tgt_in = np.concatenate([np.full((batch, 1), BOS), src[:, :-1]], 1)
    tgt_out = np.where(np.arange(length)[None] == lengths[:, None], EOS, src)
    return src, src != PAD, tgt_in, tgt_out, np.arange(length)[None] <= lengths[:, None]


@pytest.mark.parametrize("attention", seq2seq.ATTENTION)
def test_shapes_empty_source_and_attention_mask(attention):
    model = tiny(attention)
    params = nn.meta.unbox(seq2seq.init_variables(model, jax.random.key(0)))["params"]
    src, mask = seq2seq.pad_sources([np.array([4, 5, 6]), np.array([], np.int32)], PAD)
    assert src.shape == (2, 8) and mask.sum(1).tolist() == [3, 0]
    tokens, alphas = jax.jit(lambda p, s, m: seq2seq.greedy(model, p, s, m, bos_id=BOS, max_len=5))(params, src, mask)
    assert tokens.shape == (2, 5) and alphas.shape == (2, 5, 8)
    assert np.isfinite(np.asarray(alphas)).all()
    if attention != "none":  # weights sum to one over the real source words and never touch padding
        np.testing.assert_allclose(np.asarray(alphas[0, :, :3]).sum(-1), 1.0, rtol=1e-5)
        assert float(jnp.abs(alphas[0, :, 3:]).max()) == 0.0


def test_copy_task_learns_and_greedy_and_beam_agree():
    model = tiny("additive")
    params = nn.meta.unbox(seq2seq.init_variables(model, jax.random.key(0)))["params"]
    tx = optax.adam(1e-2)
    rng = np.random.default_rng(0)
    data = [tuple(jnp.asarray(x) for x in copy_batch(rng)) for _ in range(300)]
    stacked = tuple(jnp.stack(xs) for xs in zip(*data))

    def loss(p, batch):
        src, src_mask, tgt_in, tgt_out, tgt_mask = batch
        total, count = token_cross_entropy(model.apply({"params": p}, src, src_mask, tgt_in), tgt_out, tgt_mask)
        return total / count

    @jax.jit
    def fit(params, batches):
        def step(carry, batch):
            p, opt = carry
            value, grads = jax.value_and_grad(loss)(p, batch)
            updates, opt = tx.update(grads, opt, p)
            return (optax.apply_updates(p, updates), opt), value

        (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), batches)
        return params, losses

    params, losses = fit(params, stacked)
    assert float(losses[-20:].mean()) < 0.1 < float(losses[:20].mean())

    src, src_mask, _, tgt_out, tgt_mask = copy_batch(np.random.default_rng(1), batch=16)
    greedy, _ = jax.jit(lambda p: seq2seq.greedy(model, p, src, src_mask, bos_id=BOS, max_len=7))(params)
    beam = jax.jit(lambda p: seq2seq.beam(model, p, src, src_mask, bos_id=BOS, eos_id=EOS, pad_id=PAD, max_len=7,
                                          beam_size=3))(params)
    want = [seq2seq.cut_at_eos(row[m], EOS) for row, m in zip(tgt_out, tgt_mask)]
    assert sum(seq2seq.cut_at_eos(g, EOS) == w for g, w in zip(np.asarray(greedy), want)) >= 14
    assert sum(seq2seq.cut_at_eos(b, EOS) == w for b, w in zip(np.asarray(beam), want)) >= 14


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="model.attention"):  # when the config is built
        get_preset("multi30k_additive", ["model.attention=dot"])
    cfg = get_preset("multi30k_additive")
    bad = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, attention="dot"))
    with pytest.raises(ConfigError, match="model.attention"):  # and when a model is built from one made in code
        seq2seq.model_from_config(bad, 10, 10)


@pytest.mark.parametrize("attention,readout", [(a, 0) for a in seq2seq.ATTENTION] + [("additive", 8)])
def test_teacher_forcing_equals_step_by_step_decoding(attention, readout):
    """The hoisted teacher-forced pass gives the logits of `decode_step` applied one position at a time."""
    model = tiny(attention, readout)
    params = nn.meta.unbox(seq2seq.init_variables(model, jax.random.key(1)))["params"]
    src, mask, tgt_in, _, _ = copy_batch(np.random.default_rng(0), batch=4)
    full = model.apply({"params": params}, src, mask, tgt_in)

    def stepwise(mdl):
        enc, s, out = mdl.encode(src, mask), None, []
        s = enc["s"]
        for t in range(tgt_in.shape[1]):
            logits, s, _ = mdl.decode_step(enc, s, mdl.embed_target(tgt_in[:, t]))
            out.append(logits)
        return jnp.stack(out, 1)

    np.testing.assert_allclose(np.asarray(full), np.asarray(nn.apply(stepwise, model)({"params": params})),
                               atol=1e-5, rtol=1e-5)
