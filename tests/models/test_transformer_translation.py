"""The Transformer encoder-decoder (`lmjax.models.transformer`): parity with torch.nn.Transformer, cached decoding,
greedy and beam search (against brute force), padding invariance, the translate task's loss and config errors."""

import dataclasses
import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lmjax.config import ConfigError, get_preset
from lmjax.data.pipeline import Data
from lmjax.data.translation import encode_lines, fit_joint_bpe
from lmjax.models import transformer
from lmjax.models.transformer import Transformer, TransformerConfig
from lmjax.ops.sampling import gnmt_length_penalty

PAD, BOS, EOS = 0, 1, 2  # the synthetic vocabularies' specials (the BPE tokenizer has its own)


def config(**kw) -> TransformerConfig:
    base = dict(vocab_size=50, d_model=16, num_heads=2, enc_layers=2, dec_layers=2, d_ff=32, max_len=16, dropout=0.0,
                decode_extra=8)
    return TransformerConfig(**{**base, **kw})


def init(model: Transformer, seed: int = 0, noise: float = 0.1):
    """Random fp32 numpy params of the model's shapes, drawn here (no init program to compile): matrices and tables
    ~ N(0, 1/d) as the model's initializers (learned positions N(0, 0.02^2)), LayerNorm scales 1 + N(0, noise^2)
    and biases N(0, noise^2), so that neither is the identity."""
    shapes = jax.eval_shape(functools.partial(transformer.init_variables, model), jax.random.key(0))["params"]
    rng = np.random.default_rng(seed)
    std = model.config.d_model ** -0.5

    def draw(path, leaf):
        names = [getattr(k, "key", None) for k in path]
        shape = leaf.value.shape if isinstance(leaf, nn.Partitioned) else leaf.shape
        x = rng.normal(size=shape)
        if names[-1] == "scale":
            x = 1 + noise * x
        elif names[-1] == "bias":
            x = noise * x
        else:
            x = x * (0.02 if names[0] == "pos_embed" else std)
        return x.astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def sharpen(params, factor: float):
    """Scale the output projection (the `out` kernel, or the tied table): sharper next-token distributions."""
    params = dict(params)
    name = "out" if "out" in params else ("embed" if "embed" in params else "tgt_embed")
    params[name] = jax.tree.map(lambda p: p * factor, params[name])
    return params


def lengths_mask(lengths, width):
    return np.arange(width)[None] < np.asarray(lengths)[:, None]


def random_tokens(rng, lengths, width, low=3, high=50):
    """int32 [B, width]: lengths[b] random ids in [low, high), then PAD."""
    ids = rng.integers(low, high, (len(lengths), width)).astype(np.int32)
    return np.where(lengths_mask(lengths, width), ids, PAD).astype(np.int32)


@functools.partial(jax.jit, static_argnums=0)
def forward(model, params, src, src_mask, tgt_in, tgt_mask):
    return model.apply({"params": params}, src, src_mask, tgt_in, tgt_mask)


# ------------------------------------------------------------------------------------------ torch.nn.Transformer


def torch_transformer(cfg: TransformerConfig, params) -> torch.nn.Transformer:
    """torch.nn.Transformer of cfg's sizes holding `params` (see the module doc of lmjax.models.transformer)."""
    c = cfg.d_model
    t = torch.nn.Transformer(c, cfg.num_heads, cfg.enc_layers, cfg.dec_layers, cfg.d_ff, dropout=0.0,
                             activation="relu", layer_norm_eps=cfg.epsilon, batch_first=True,
                             norm_first=cfg.norm == "pre")

    def put(dst: torch.Tensor, *arrays):
        value = np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in arrays])
        assert value.size == dst.numel()
        dst.data.copy_(torch.from_numpy(value.reshape(tuple(dst.shape))))

    def norm(dst: torch.nn.LayerNorm, p):
        put(dst.weight, p["scale"]), put(dst.bias, p["bias"])

    def linear(dst: torch.nn.Linear, p):
        put(dst.weight, p["kernel"]), put(dst.bias, p["bias"])

    def block(dst, p, decoder: bool):
        # kernels are (out, in) as torch's: c_attn [3, H, D, C] is in_proj_weight [3C, C], c_proj [C, H, D] is
        # out_proj.weight [C, C]; cross-attention's q_attn [H, D, C] and kv_attn [2, H, D, C] stack into in_proj.
        put(dst.self_attn.in_proj_weight, p["attn"]["c_attn"]["kernel"])
        put(dst.self_attn.in_proj_bias, p["attn"]["c_attn"]["bias"])
        linear(dst.self_attn.out_proj, p["attn"]["c_proj"])
        linear(dst.linear1, p["mlp"]["c_fc"])
        linear(dst.linear2, p["mlp"]["c_proj"])
        norm(dst.norm1, p["ln_1"])
        if decoder:
            cross = p["cross_attn"]
            put(dst.multihead_attn.in_proj_weight, cross["q_attn"]["kernel"], cross["kv_attn"]["kernel"])
            put(dst.multihead_attn.in_proj_bias, cross["q_attn"]["bias"], cross["kv_attn"]["bias"])
            linear(dst.multihead_attn.out_proj, cross["c_proj"])
            norm(dst.norm2, p["ln_cross"])
            norm(dst.norm3, p["ln_2"])
        else:
            norm(dst.norm2, p["ln_2"])

    for i, layer in enumerate(t.encoder.layers):
        block(layer, params["encoder"][f"layers_{i}"], decoder=False)
    for i, layer in enumerate(t.decoder.layers):
        block(layer, params["decoder"][f"layers_{i}"], decoder=True)
    if cfg.norm == "pre":  # torch's final LayerNorms are our pre-LN stacks' ln_f
        norm(t.encoder.norm, params["encoder"]["ln_f"])
        norm(t.decoder.norm, params["decoder"]["ln_f"])
    else:  # a post-LN stack ends normalized: no final LayerNorm
        t.encoder.norm = None
        t.decoder.norm = None
    return t.eval()


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True", "ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("norm", ["post", "pre"])
def test_encoder_and_decoder_match_torch_transformer(norm):
    cfg = config(norm=norm)
    model = Transformer(cfg)
    params = init(model, seed=0, noise=0.3)
    t = torch_transformer(cfg, params)
    rng = np.random.default_rng(0)
    src_len, tgt_len = np.array([7, 4, 1]), np.array([6, 2, 5])
    x = rng.normal(size=(3, 7, cfg.d_model)).astype(np.float32)
    y = rng.normal(size=(3, 6, cfg.d_model)).astype(np.float32)
    src_mask, tgt_mask = lengths_mask(src_len, 7), lengths_mask(tgt_len, 6)
    x[~src_mask] = 1e3  # what padded positions hold never matters
    y[~tgt_mask] = -1e3

    @jax.jit
    def run(params):
        memory = model.apply({"params": params}, x, src_mask, method=Transformer.encode_embedded)
        return memory, model.apply({"params": params}, y, tgt_mask, memory, src_mask,
                                   method=Transformer.decode_embedded)

    memory, out = run(params)
    with torch.no_grad():
        pad_src, pad_tgt = torch.from_numpy(~src_mask), torch.from_numpy(~tgt_mask)
        causal = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)  # True = may not attend
        want_memory = t.encoder(torch.from_numpy(x), src_key_padding_mask=pad_src)
        want_out = t(torch.from_numpy(x), torch.from_numpy(y), tgt_mask=causal, src_key_padding_mask=pad_src,
                     tgt_key_padding_mask=pad_tgt, memory_key_padding_mask=pad_src, tgt_is_causal=True)
    np.testing.assert_allclose(np.asarray(memory)[src_mask], want_memory.numpy()[src_mask], atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(out)[tgt_mask], want_out.numpy()[tgt_mask], atol=1e-5, rtol=0)
    assert float(np.abs(np.asarray(out)[tgt_mask]).max()) > 0.5  # not a vacuous comparison


# ---------------------------------------------------------------------------------------------- cached decoding


@pytest.mark.parametrize("norm,tie,positions", [("post", "all", "sinusoidal"), ("pre", "none", "learned")])
def test_cached_decoding_equals_full_recomputation(norm, tie, positions):
    """decode_step one position at a time through the KV caches gives the teacher-forced forward's logits."""
    cfg = config(norm=norm, tie=tie, positions=positions)
    model = Transformer(cfg)
    params = init(model, seed=1, noise=0.1)
    rng = np.random.default_rng(1)
    b, s, t = 3, 7, 6
    src = random_tokens(rng, [7, 3, 5], s)
    tgt_in = random_tokens(rng, [t] * b, t)
    tgt_in[:, 0] = BOS
    src_mask = src != PAD

    @jax.jit
    def full_and_stepped(params):
        def run(mdl):
            caches, cross = mdl.decoder_caches(mdl.encode(src, src_mask), b, t + 3)  # slots past t stay unwritten

            def step(caches, xs):
                tokens, i = xs
                logits, caches = mdl.decode_step(tokens, jnp.full((b,), i, jnp.int32), caches, cross, src_mask)
                return caches, logits

            stepped = jax.lax.scan(step, caches, (jnp.asarray(tgt_in.T), jnp.arange(t)))[1].transpose(1, 0, 2)
            return mdl(src, src_mask, tgt_in), stepped

        return nn.apply(run, model)({"params": params})

    full, got = map(np.asarray, full_and_stepped(params))
    v = cfg.vocab_size
    assert got.shape == full.shape == (b, t, transformer.padded_size(v))
    np.testing.assert_allclose(got[..., :v], full[..., :v], atol=1e-5, rtol=0)
    assert np.all(got[..., v:] == -np.inf) and np.all(full[..., v:] == -np.inf)
    assert np.isfinite(got[..., :v]).all()


# ------------------------------------------------------------------------------------------- greedy and beam


def first_eos(row, eos_id: int = EOS) -> list[int]:
    """The tokens up to and including the first eos (all of them when there is none)."""
    row = [int(x) for x in row]
    return row[:row.index(eos_id) + 1] if eos_id in row else row


def test_beam_of_one_is_greedy_or_an_earlier_eos_exit():
    """beam_size=1 (no length penalty) follows the greedy path, but also keeps each "greedy prefix + eos" it passes
    as a finished hypothesis (as fairseq's and T2T's beams do), so it returns the best of those exits and of the
    greedy sequence: greedy decoding exactly, up to and including the first eos, wherever that one scores best.
    Checked on two sharpened models whose eos logit is boosted so that greedy rows end at different steps; greedy
    fills after eos with eos, beam with pad."""
    cfg = config(vocab_size=12, tie="none")
    model = Transformer(cfg)
    rng = np.random.default_rng(2)
    lengths = [7, 1, 4, 6, 2, 5, 3, 7]
    src = random_tokens(rng, lengths, 8, high=12)
    src_mask = src != PAD
    b, max_len = len(lengths), 10
    kinds = []
    for eos_scale in (3.0, 2.0):
        params = sharpen(init(model, seed=3, noise=0.3), 8.0)
        row_scale = np.where(np.arange(params["out"]["kernel"].shape[0]) == EOS, eos_scale, 1)
        params["out"]["kernel"] = params["out"]["kernel"] * row_scale.astype(np.float32)[:, None]
        greedy = transformer.greedy(model, params, src, src_mask, bos_id=BOS, eos_id=EOS, max_len=max_len)
        seqs, scores = transformer.beam(model, params, src, src_mask, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                                        max_len=max_len, beam_size=1, length_penalty=0.0)
        greedy, seqs, scores = np.asarray(greedy), np.asarray(seqs), np.asarray(scores)
        assert seqs.shape == (b, 1, max_len) and scores.shape == (b, 1)

        # log p along the greedy path (teacher forced): its eos exits and the greedy sequence itself
        tgt_in = np.concatenate([np.full((b, 1), BOS), greedy[:, :-1]], 1).astype(np.int32)
        logits = forward(model, params, src, src_mask, tgt_in, np.ones((b, max_len), bool))
        logp = np.asarray(jax.nn.log_softmax(logits), np.float64)
        cum = np.cumsum(np.take_along_axis(logp, greedy[..., None], -1)[..., 0], 1)
        cum = np.concatenate([np.zeros((b, 1)), cum], 1)
        for r in range(b):
            g = first_eos(greedy[r])
            exits = [(cum[r, t] + logp[r, t, EOS], g[:t] + [EOS]) for t in range(len(g)) if g[t] != EOS]
            best_score, best = max(exits + [(cum[r, len(g)], g)])
            assert first_eos(seqs[r, 0]) == best
            np.testing.assert_allclose(scores[r, 0], best_score, atol=1e-5, rtol=1e-5)
            assert (seqs[r, 0, len(best):] == PAD).all() and (greedy[r, len(g):] == EOS).all()
            kinds.append("exit" if best != g else "greedy" if len(g) == max_len else "greedy, eos before max_len")
    assert set(kinds) == {"exit", "greedy", "greedy, eos before max_len"}, kinds
    assert kinds[:b].count("exit") == 0  # the sharper eos: beam of one is greedy on every row


def brute_force(model, params, src, src_mask, *, vocab: int, max_len: int, alpha: float):
    """Every hypothesis beam search may return (ending in eos, or max_len tokens without one), scored as
    `beam_search` does: log p(y) / ((5 + |y|) / 6)^alpha with |y| counting the eos. Returns per source row a list of
    (score, tokens), and the greedy sequence."""
    other = [v for v in range(vocab) if v != EOS]
    prefixes = list(itertools.product(other, repeat=max_len - 1))  # every non-eos prefix of max_len - 1 tokens
    n = len(prefixes)
    tgt_in = np.array([(BOS, *p) for p in prefixes], np.int32)
    out = []
    for r in range(src.shape[0]):
        rows = np.repeat(src[r:r + 1], n, 0), np.repeat(src_mask[r:r + 1], n, 0)
        logits = forward(model, params, *rows, tgt_in, np.ones(tgt_in.shape, bool))[..., :vocab]
        logp = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)  # [n, max_len, vocab]: step t after prefix[:t]
        hyps = {}
        for j, p in enumerate(prefixes):
            prefix_logp = np.concatenate([[0.0], np.cumsum(logp[j, np.arange(max_len - 1), p])])
            for t in range(max_len):  # p[:t] then eos, |y| = t + 1
                hyps[(*p[:t], EOS)] = prefix_logp[t] + logp[j, t, EOS]
            for last in other:  # max_len tokens, no eos
                hyps[(*p, last)] = prefix_logp[-1] + logp[j, -1, last]
        scored = sorted(((lp / float(gnmt_length_penalty(len(y), alpha)), y) for y, lp in hyps.items()), reverse=True)
        greedy = []
        while len(greedy) < max_len and (not greedy or greedy[-1] != EOS):
            j = prefixes.index(tuple(greedy) + (PAD,) * (max_len - 1 - len(greedy))) if greedy else 0
            greedy.append(int(np.argmax(logp[j, len(greedy)])))
        out.append((scored, tuple(greedy)))
    return out


def test_beam_search_finds_the_brute_force_best():
    """A beam of (vocab - 1)^(max_len - 1) keeps every non-eos prefix, so it must return the exact top hypotheses;
    checked on a few sharpened random models, with GNMT's length penalty."""
    vocab, max_len, alpha = 8, 3, 0.6  # PAD, BOS, EOS and 5 ordinary tokens
    beam_size = (vocab - 1) ** (max_len - 1)
    differs_from_greedy = 0
    model = Transformer(config(vocab_size=vocab, tie="none", max_len=8))
    for seed, factor in enumerate((1.0, 2.0, 3.0)):
        params = sharpen(init(model, seed=10 + seed, noise=0.3), factor)
        rng = np.random.default_rng(seed)
        src = random_tokens(rng, [5, 2], 6, high=vocab)
        src_mask = src != PAD
        seqs, scores = transformer.beam(model, params, src, src_mask, bos_id=BOS, eos_id=EOS, pad_id=PAD,
                                        max_len=max_len, beam_size=beam_size, length_penalty=alpha)
        seqs, scores = np.asarray(seqs), np.asarray(scores)
        for r, (scored, greedy) in enumerate(brute_force(model, params, src, src_mask, vocab=vocab,
                                                         max_len=max_len, alpha=alpha)):
            best = scored[0][1]
            assert scored[0][0] - scored[1][0] > 1e-4  # a unique best
            assert tuple(first_eos(seqs[r, 0])) == best
            np.testing.assert_allclose(scores[r], [s for s, _ in scored[:beam_size]], atol=1e-5, rtol=0)
            differs_from_greedy += best != greedy
    assert differs_from_greedy  # the search is not just greedy decoding here


# ------------------------------------------------------------------------------------------- padding invariance

PAIRS = [("ein mann fährt fahrrad .", "a man rides a bike ."),
         ("zwei hunde spielen im schnee .", "two dogs play in the snow ."),
         ("eine frau liest ein buch .", "a woman reads a book ."),
         ("kinder spielen fußball auf der straße .", "children play soccer on the street ."),
         ("ein hund läuft über die wiese .", "a dog runs across the meadow ."),
         ("ein mann und eine frau sitzen auf einer bank .", "a man and a woman sit on a bench .")]


@functools.cache
def tokenizer():
    return fit_joint_bpe(PAIRS, 120)


def test_translations_and_log_probs_do_not_depend_on_the_batch():
    tok = tokenizer()
    cfg = config(vocab_size=tok.vocab_size, max_len=16, decode_extra=8)  # decode_length: 16 at widths 8 and 16
    model = Transformer(cfg)
    params = init(model, seed=3, noise=0.1)
    short = ["ein hund .", "eine frau ."]
    long = ["zwei hunde spielen auf der straße .", "ein mann und eine frau lesen ein buch ."]
    ids = {s: x for s, x in zip(short + long, encode_lines(tok, short + long))}
    assert all(len(ids[s]) <= 8 for s in short) and all(8 < len(ids[s]) <= 16 for s in long)
    assert transformer.decode_length(model, 8) == transformer.decode_length(model, 16)

    def batch(sentences, width, rows=4):
        src = np.full((rows, width), tok.pad_id, np.int32)
        for r, s in enumerate(sentences):
            src[r, :len(ids[s])] = ids[s]
        return src, lengths_mask([len(ids[s]) for s in sentences] + [0] * (rows - len(sentences)), width)

    alone = batch(short[:1], 8)
    crowded = batch([long[0], short[1], short[0], long[1]], 16)  # short[0] is row 2, padded to 16
    kw = dict(bos_id=tok.bos_id, eos_id=tok.eos_id, max_len=transformer.decode_length(model, 8))
    g_alone = np.asarray(transformer.greedy(model, params, *alone, **kw))
    g_crowded = np.asarray(transformer.greedy(model, params, *crowded, **kw))
    np.testing.assert_array_equal(g_alone[0], g_crowded[2])
    b_alone = transformer.beam(model, params, *alone, pad_id=tok.pad_id, beam_size=3, length_penalty=0.6, **kw)
    b_crowded = transformer.beam(model, params, *crowded, pad_id=tok.pad_id, beam_size=3, length_penalty=0.6, **kw)
    np.testing.assert_array_equal(np.asarray(b_alone[0])[0], np.asarray(b_crowded[0])[2])
    np.testing.assert_allclose(np.asarray(b_alone[1])[0], np.asarray(b_crowded[1])[2], atol=1e-5, rtol=0)

    # teacher-forced log-probabilities of a target, in a target batch of other widths
    tgt = np.asarray(encode_lines(tok, ["a dog ."])[0])
    others = encode_lines(tok, ["a man rides a bike .", "a woman ."])  # 13 and 3 tokens

    def targets(seqs, width):
        tgt_in = np.full((4, width), tok.pad_id, np.int32)
        tgt_out = np.full((4, width), tok.pad_id, np.int32)
        for r, y in enumerate(seqs):
            tgt_in[r, :len(y) + 1] = [tok.bos_id, *y]
            tgt_out[r, :len(y) + 1] = [*y, tok.eos_id]
        return tgt_in, tgt_out, tgt_out != tok.pad_id

    def token_logp(src, src_mask, tgt_in, tgt_out, tgt_mask):
        logp = jax.nn.log_softmax(forward(model, params, src, src_mask, tgt_in, tgt_mask), -1)
        return np.take_along_axis(np.asarray(logp), tgt_out[..., None], -1)[..., 0]

    n = len(tgt) + 1
    lp_alone = token_logp(*alone, *targets([tgt], 8))[0, :n]
    lp_crowded = token_logp(*crowded, *targets([others[0], others[1], tgt], 16))[2, :n]
    np.testing.assert_allclose(lp_alone, lp_crowded, atol=1e-5, rtol=0)
    assert np.isfinite(lp_alone).all()

    # translate (sorts by length, pads to multiples of 8 in batches of 4 rows): the same shapes, the same programs
    for beam_size, tokens in ((0, g_alone[0]), (3, np.asarray(b_alone[0])[0, 0])):
        one = transformer.translate(model, params, tok, short[:1], beam_size=beam_size, batch_size=4)
        many = transformer.translate(model, params, tok, [long[0], short[0], long[1], short[1]], beam_size=beam_size,
                                     batch_size=4)
        assert one == [tok.decode(transformer.cut_at_eos(tokens, tok.eos_id))] and many[1] == one[0]
        assert len(many) == 4
    empty = np.full((4, 8), tok.pad_id, np.int32), np.zeros((4, 8), bool)  # an empty source translates too
    g_empty = np.asarray(transformer.greedy(model, params, *empty, **kw))[0]
    assert transformer.translate(model, params, tok, [""], batch_size=4) == [
        tok.decode(transformer.cut_at_eos(g_empty, tok.eos_id))]


# ------------------------------------------------------------------------------------------------- the task


def test_translate_loss_smooths_over_the_real_vocabulary():
    """loss = Σ_t -[(1 - eps) log p(y_t) + eps / V Σ_{v < V} log p(v)] over real target tokens, V the tokenizer's
    size (not the padded table's, whose extra columns are -inf); aux nll = Σ_t -log p(y_t)."""
    vocab, eps = 50, 0.2
    run_cfg = get_preset("transformer_smoke", ["model.dropout=0", f"model.label_smoothing={eps}"])
    task = transformer.make_task(run_cfg, Data(tokenizer=None, vocab_size=vocab, train=None))
    model = task.model
    assert model.config.vocab_size == vocab
    rng = np.random.default_rng(4)
    src = random_tokens(rng, [3, 2], 3)
    tgt_in = random_tokens(rng, [3, 2], 3)
    tgt_out = random_tokens(rng, [3, 2], 3)
    batch = {"src": src, "src_mask": src != PAD, "tgt_in": tgt_in, "tgt_out": tgt_out, "tgt_mask": tgt_out != PAD}
    params = init(model, seed=4)

    @jax.jit
    def run(params, batch):
        logits = model.apply({"params": params}, batch["src"], batch["src_mask"], batch["tgt_in"], batch["tgt_mask"])
        return task.loss_fn(params, batch, None, False), logits

    (loss, count, aux), logits = run(params, batch)
    logits = np.asarray(logits, np.float64)
    assert logits.shape[-1] == 128 and np.all(logits[..., vocab:] == -np.inf)
    logits = logits[..., :vocab]
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    target_logp = np.take_along_axis(logp, tgt_out[..., None], -1)[..., 0]
    mask = tgt_out != PAD
    want = -((1 - eps) * target_logp + eps / vocab * logp.sum(-1))[mask].sum()
    assert np.isfinite(float(loss)) and float(count) == mask.sum() == 5
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    np.testing.assert_allclose(float(aux["nll"]), -target_logp[mask].sum(), rtol=1e-5)
    assert float(loss) != pytest.approx(float(aux["nll"]), rel=1e-3)  # the smoothing did something


# ------------------------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize("override,key", [("model.norm=mid", "model.norm"), ("model.num_heads=3", "model.d_model"),
                                          ("model.tie=both", "model.tie"), ("model.positions=rope", "model.positions")])
def test_bad_config_is_a_one_line_config_error(override, key):
    with pytest.raises(ConfigError, match=key) as e:  # when the config is built
        get_preset("transformer_smoke", [override])
    assert "\n" not in str(e.value)
    name, value = override.removeprefix("model.").split("=")
    cfg = get_preset("transformer_smoke")
    bad = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{name: int(value) if value.isdigit()
                                                                           else value}))
    with pytest.raises(ConfigError, match=key):  # and when a model is built from one made in code
        transformer.model_from_config(bad, 50)
