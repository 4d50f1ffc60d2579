import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from lmjax.config import DEFAULT_RULES, ConfigError, RunConfig, get_preset, list_presets
from lmjax.train.task import Data
from lmjax.models.gpt import GPT, GPTConfig, count_params, generate, init_cache, make_task, model_from_config

V = 50  # real vocabulary; padded to 128
CFG = GPTConfig(vocab_size=V, block_size=16, n_layer=2, n_head=2, n_embd=32)


# Everything runs under jit: eager Flax dispatches (and compiles) op by op, which is far slower even for tiny models.
@functools.partial(jax.jit, static_argnames=("cfg", "dtype", "train"))
def forward(params, x, *, cfg=CFG, dtype=jnp.float32, train=False, rng=None):
    rngs = {"dropout": rng} if train else {}
    return GPT(cfg, dtype=dtype).apply({"params": params}, x, train=train, rngs=rngs)


# Random numbers for tests come from NumPy: every jax.random call under jit costs seconds of XLA compile on this CPU.
@functools.cache
def init_params(noise=0.0):
    """Unboxed params; `noise` adds N(0, noise^2) to every leaf so logits are O(1) and argmax ties are unlikely."""
    rng = np.random.default_rng(1)
    return jax.tree.map(lambda x: jnp.asarray(x + noise * rng.standard_normal(x.shape), jnp.float32), _init())


@functools.cache
def _init():
    variables = jax.jit(GPT(CFG).init)(jax.random.key(0), jnp.zeros((1, CFG.block_size), jnp.int32))
    return jax.tree.map(np.asarray, nn.meta.unbox(variables)["params"])


@functools.cache
def loss_fn():
    return jax.jit(make_task(run_cfg(), Data(None, V, None)).loss_fn, static_argnums=3)


def tokens(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, V, shape), jnp.int32)


@pytest.fixture(scope="module")
def params():
    return init_params(noise=0.3)


def run_cfg(model=CFG, **data):
    return RunConfig(name="t", model=model, data=dataclasses.replace(get_preset("gpt_smoke").data, **data))


# ------------------------------------------------------------------------------------------------- model basics


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes(params, dtype):
    x = tokens((2, 16))
    logits = forward(params, x, dtype=dtype)
    assert CFG.padded_vocab_size == 128
    assert logits.shape == (2, 16, 128) and logits.dtype == jnp.float32
    abstract = jax.eval_shape(GPT(CFG, dtype=dtype).init, jax.random.key(0), x)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nn.meta.unbox(abstract)))
    assert np.all(np.isneginf(logits[..., V:])) and np.all(np.isfinite(logits[..., :V]))
    if dtype == jnp.bfloat16:  # the same function to bf16 precision (8 bits of mantissa: about 0.4% per rounding)
        ref = forward(params, x)[..., :V]
        assert np.linalg.norm(logits[..., :V] - ref) < 0.03 * np.linalg.norm(ref)


def test_every_param_has_logical_axes():
    abstract = jax.eval_shape(GPT(dataclasses.replace(CFG, tie_embeddings=False)).init, jax.random.key(0),
                              jnp.zeros((1, 4), jnp.int32))
    specs = nn.get_partition_spec(abstract)["params"]
    shapes = nn.meta.unbox(abstract)["params"]
    known = {name for name, _ in DEFAULT_RULES}
    pairs = zip(jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, P)), jax.tree.leaves(shapes))
    for spec, shape in pairs:
        assert len(spec) == len(shape.shape) and all(name in known for name in spec), (spec, shape.shape)
    assert specs["wte"] == P("vocab", "embed") and specs["lm_head"]["kernel"] == P("vocab", "embed")
    assert specs["h_0"]["attn"]["c_attn"]["kernel"] == P("qkv", "heads", "kv", "embed")


def test_causal(params):
    x = tokens((2, 16))
    y = x.at[:, 6].set((x[:, 6] + 1) % V)
    a, b = forward(params, x), forward(params, y)
    np.testing.assert_array_equal(a[:, :6], b[:, :6])
    assert not np.allclose(a[:, 6:, :V], b[:, 6:, :V])


def test_residual_projection_init_std():
    p = init_params()
    residual = 0.02 / np.sqrt(2 * CFG.n_layer)
    for block in (p["h_0"], p["h_1"]):
        assert np.std(block["mlp"]["c_proj"]["kernel"]) == pytest.approx(residual, rel=0.05)
        assert np.std(block["attn"]["c_proj"]["kernel"]) == pytest.approx(residual, rel=0.1)
        assert np.std(block["mlp"]["c_fc"]["kernel"]) == pytest.approx(0.02, rel=0.05)
        assert np.all(block["mlp"]["c_fc"]["bias"] == 0)
    assert np.std(p["wte"]) == pytest.approx(0.02, rel=0.05)


def test_dropout_only_in_training(params):
    cfg = dataclasses.replace(CFG, dropout=0.5)
    x = tokens((2, 16))
    ref = forward(params, x)
    np.testing.assert_array_equal(forward(params, x, cfg=cfg), ref)
    trained = forward(params, x, cfg=cfg, train=True, rng=jax.random.key(0))
    assert not np.allclose(trained[..., :V], ref[..., :V])


# ------------------------------------------------------------------------------------------------- config errors


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match=r"^model.n_embd=130 is not divisible by model.n_head=4: choose n_embd a "
                                          r"multiple of n_head$"):
        model_from_config(run_cfg(dataclasses.replace(CFG, n_embd=130, n_head=4)), V)


def test_seq_len_beyond_block_size():
    with pytest.raises(ConfigError, match="data.seq_len=32 exceeds model.block_size=16"):
        make_task(run_cfg(seq_len=32), Data(None, V, None))
    with pytest.raises(ValueError, match="longer than model.block_size=16"):
        GPT(CFG).init(jax.random.key(0), jnp.zeros((1, 17), jnp.int32))


def test_vocab_size_resolution():
    assert model_from_config(run_cfg(dataclasses.replace(CFG, vocab_size=0)), 65).config.vocab_size == 65
    with pytest.raises(ConfigError, match="smaller than the tokenizer's 65"):
        model_from_config(run_cfg(), 65)
    half = dataclasses.replace(run_cfg(), train=dataclasses.replace(run_cfg().train, dtype="float16"))
    with pytest.raises(ConfigError, match="train.dtype='float16'"):
        model_from_config(half, V)


# ---------------------------------------------------------------------------------------------------- the loss


def test_loss_fn_is_sum_and_count_of_cross_entropy(params):
    x, y = tokens((2, 16), 1), tokens((2, 16), 2)
    mask = jnp.arange(16) < jnp.array([[9], [1]])
    loss_sum, count, aux = loss_fn()(params, {"inputs": x, "targets": y, "mask": mask}, None, False)
    logp = jax.nn.log_softmax(forward(params, x)[..., :V])
    nll = -jnp.take_along_axis(logp, y[..., None], -1)[..., 0]
    assert aux == {} and count == 10
    np.testing.assert_allclose(loss_sum / count, nll[mask].mean(), rtol=1e-6)
    unmasked, count, _ = loss_fn()(params, {"inputs": x, "targets": y, "mask": jnp.ones((2, 16))}, None, False)
    np.testing.assert_allclose(unmasked / count, nll.mean(), rtol=1e-6)
    task = make_task(run_cfg(), Data(None, V, None))
    assert task.example_batch["inputs"] == jax.ShapeDtypeStruct((4, 16), jnp.int32)
    assert task.tokens_per_example == 16


def test_padded_vocab_excluded_from_loss_and_never_sampled(params):
    # Give the padding rows of the tied embedding a huge overlap with every hidden state.
    loud = dict(params, wte=params["wte"].at[V:].set(50.0))
    batch = {"inputs": tokens((2, 16), 3), "targets": tokens((2, 16), 4), "mask": jnp.ones((2, 16))}
    assert loss_fn()(loud, batch, None, False)[0] == loss_fn()(params, batch, None, False)[0]
    out = sample(loud, seed=0)
    assert out.shape == (1, 22) and out.dtype == jnp.int32 and np.all(out < V)


def test_flops_per_token_is_nanogpt_estimate():
    task = make_task(run_cfg(), Data(None, V, None))
    c, layers, t = CFG.n_embd, CFG.n_layer, 16
    per_layer = 3 * c * c + 3 * c + c * c + c + 2 * (4 * c * c) + 4 * c + c + 4 * c  # qkv, proj, mlp, 2 LayerNorms
    n = layers * per_layer + 2 * c + 128 * c  # + final LayerNorm + tied (padded) embedding; wpe excluded
    assert task.flops_per_token == 6 * n + 12 * layers * c * t


def test_adamw_fits_a_repeated_sequence():
    task = make_task(run_cfg(), Data(None, V, None))
    seq = jnp.tile(jnp.arange(8, dtype=jnp.int32) * 3, 5)
    batch = {"inputs": jnp.stack([seq[:16], seq[4:20]]), "targets": jnp.stack([seq[1:17], seq[5:21]])}
    params = init_params()
    tx = optax.adamw(1e-2)
    opt = tx.init(params)

    def mean_loss(params):
        loss_sum, count, _ = task.loss_fn(params, batch, None, False)
        return loss_sum / count

    @jax.jit
    def step(params, opt):
        loss, grads = jax.value_and_grad(mean_loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, loss

    losses = []
    for _ in range(30):
        params, opt, loss = step(params, opt)
        losses.append(float(loss))
    assert losses[0] == pytest.approx(np.log(V), rel=0.1)
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------------------------------- KV cache


def test_cached_decode_matches_full_recomputation(params):
    """Two prompts (lengths 5 and 3, right-padded) prefilled, then decoded one token per step; every step's logits
    equal those of a full forward pass over the same row (which by causality gives every prefix at once)."""
    seq = tokens((2, CFG.block_size), 5)
    full = forward(params, seq)
    lengths = jnp.array([5, 3])
    prompts = jnp.where(jnp.arange(5) < lengths[:, None], seq[:, :5], 0)  # padding content must not matter
    decode = jax.jit(lambda tok, pos, cache: GPT(CFG).apply({"params": params}, tok, positions=pos, cache=cache))

    logits, cache = decode(prompts, jnp.broadcast_to(jnp.arange(5), (2, 5)), init_cache(CFG, 2))
    for b in range(2):
        np.testing.assert_allclose(logits[b, : lengths[b], :V], full[b, : lengths[b], :V], atol=1e-5, rtol=0)
    for n in range(CFG.block_size - 5):
        pos = lengths + n
        logits, cache = decode(seq[jnp.arange(2), pos][:, None], pos[:, None], cache)
        np.testing.assert_allclose(logits[:, 0, :V], full[jnp.arange(2), pos, :V], atol=1e-5, rtol=0)
    assert jax.tree.map(jnp.shape, cache) == jax.tree.map(jnp.shape, init_cache(CFG, 2))


SAMPLING = dict(temperature=1.0, top_k=10, top_p=0.95)


def sample(params, seed):
    """16 tokens sampled after a 6-token prompt (a legacy uint32 key, as the engine passes)."""
    return generate(GPT(CFG), params, tokens((1, 6)), max_new_tokens=16, rng=jax.random.PRNGKey(seed), **SAMPLING)


def naive_greedy(params, prompt, max_new):
    """nanoGPT's generate: full forward over the last block_size tokens, argmax, append. The context is right-padded
    to block_size (one compile; causality makes the padding irrelevant) and read at its last real token."""
    seq = list(map(int, prompt))
    for _ in range(max_new):
        context = seq[-CFG.block_size:]
        logits = forward(params, jnp.asarray([context + [0] * (CFG.block_size - len(context))]))
        seq.append(int(jnp.argmax(logits[0, len(context) - 1, :V])))
    return seq


def test_greedy_generate_matches_naive_loop(params):
    """P + max_new = 22 > block_size = 16: covers the cached phase and the sliding-window phase."""
    prompts, lengths, max_new = tokens((2, 6), 6), jnp.array([6, 2]), 16
    out = generate(GPT(CFG), params, prompts, prompt_lengths=lengths, max_new_tokens=max_new, temperature=0.0)
    assert out.shape == (2, 22)
    for b in range(2):
        n = int(lengths[b]) + max_new
        assert out[b, :n].tolist() == naive_greedy(params, prompts[b, : lengths[b]], max_new)
        assert np.all(out[b, n:] == 0)


def test_generate_stops_rows_at_eos(params):
    prompts, lengths = tokens((2, 6), 7), jnp.array([6, 3])
    free = generate(GPT(CFG), params, prompts, prompt_lengths=lengths, max_new_tokens=16, temperature=0.0)
    eos = int(free[0, 8])  # row 0's third new token
    out = generate(GPT(CFG), params, prompts, prompt_lengths=lengths, max_new_tokens=16, temperature=0.0, eos_id=eos)
    for b in range(2):
        new_free, new = (x[b, lengths[b]: lengths[b] + 16].tolist() for x in (free, out))
        stop = new_free.index(eos) + 1 if eos in new_free else len(new_free)
        assert new[:stop] == new_free[:stop] and all(t == eos for t in new[stop:])
        assert np.all(out[b, lengths[b] + 16:] == eos)
    assert eos in out[0, 6:9].tolist() and out[0, 9:].tolist() == [eos] * 13


def test_sampling_is_reproducible_and_keyed(params):
    np.testing.assert_array_equal(sample(params, 0), sample(params, 0))
    assert not np.array_equal(sample(params, 0), sample(params, 1))
    with pytest.raises(ValueError, match="needs rng"):
        generate(GPT(CFG), params, tokens((2, 3)), max_new_tokens=2)
    with pytest.raises(ValueError, match="longer than model.block_size=16"):
        generate(GPT(CFG), params, tokens((2, 17)), max_new_tokens=2, temperature=0.0)


def test_task_sample_fn_decodes_prompt_and_continuation(params):
    class Chars:
        def encode(self, text):
            return [ord(c) - ord("a") for c in text]

        def decode(self, ids):
            return "".join(chr(ord("a") + i) for i in ids)

    prompt = Chars().decode(tokens((1, 6))[0].tolist())
    text = make_task(run_cfg(), Data(None, V, None)).sample_fn(params, Chars(), prompt, 16, jax.random.PRNGKey(0), **SAMPLING)
    assert text == Chars().decode(sample(params, 0)[0].tolist()) and text.startswith(prompt) and len(text) == 22


# ------------------------------------------------------------------------------------------------------ presets


def test_presets_build():
    names = {"shakespeare_char", "shakespeare_char_nanogpt", "gpt2_124m", "gpt2_355m", "gpt2_774m", "gpt2_1_5b",
             "gpt_smoke"}
    assert names <= set(list_presets())
    for name in names:
        cfg = get_preset(name)
        model = model_from_config(cfg, 65 if cfg.data.tokenizer == "char" else 50257)
        assert cfg.family == "gpt" and cfg.data.seq_len <= model.config.block_size
    default = get_preset("shakespeare_char")
    assert (default.model.n_layer, default.model.n_embd, default.data.seq_len) == (4, 128, 64)
    assert (default.data.dataset, default.data.tokenizer, default.train.steps) == ("tiny_shakespeare", "char", 2000)


def test_gpt2_124m_has_gpt2_parameter_count():
    model = model_from_config(get_preset("gpt2_124m"), 50257)
    assert model.config.padded_vocab_size == 50304
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    # HF GPT-2 small has 124,439,808 parameters; padding 47 vocabulary rows adds 47 * 768.
    assert count_params(abstract) == 124_439_808 + 47 * 768
