"""lmjax's BERT (`lmjax.models.bert`) on its own: parameter trees and logical axes of every architecture, the
published parameter counts, padding invariance, the padded vocabulary, dropout, `bert_inputs` and config errors.
Parity with Hugging Face's BERT is tests/interop/test_hf_bert.py."""

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import DEFAULT_RULES, ConfigError
from lmjax.models.bert import (BERT_SIZES, Bert, BertConfig, BertForPreTraining, BertForSequenceClassification,
                               BertForTokenClassification, bert_config, bert_inputs, count_params)

VOCAB = 99


def config(**kw) -> BertConfig:
    base = dict(vocab_size=VOCAB, hidden=32, layers=2, heads=4, intermediate=48, max_position=16)
    return BertConfig(**{**base, **kw})


MODELS = {
    "bert": lambda cfg: Bert(cfg),
    "pretraining": lambda cfg: BertForPreTraining(cfg),
    "masked_lm": lambda cfg: BertForPreTraining(cfg, nsp=False),
    "sequence": lambda cfg: BertForSequenceClassification(cfg, num_labels=3),
    "token": lambda cfg: BertForTokenClassification(cfg, num_labels=5),
}


def shapes(model, length: int = 8):
    return jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, length), jnp.int32))["params"]


@pytest.mark.parametrize("name", MODELS)
def test_every_parameter_has_logical_axes_the_rules_know(name):
    known = {axis for axis, _ in DEFAULT_RULES}
    boxed = jax.tree.leaves(shapes(MODELS[name](config())), is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert boxed and all(isinstance(p, nn.Partitioned) for p in boxed)
    for p in boxed:
        assert len(p.names) == p.value.ndim and set(p.names) <= known and len(set(p.names)) == len(p.names), p.names


def test_parameter_trees_of_the_architectures():
    trees = {name: nn.meta.unbox(shapes(make(config()))) for name, make in MODELS.items()}
    assert sorted(trees["bert"]) == ["layers_0", "layers_1", "ln_embed", "pooler", "pos_embed", "seg_embed",
                                     "tok_embed"]
    assert sorted(trees["pretraining"]) == ["bert", "mlm", "nsp"] and sorted(trees["masked_lm"]) == ["bert", "mlm"]
    assert "pooler" not in trees["masked_lm"]["bert"] and "pooler" not in trees["token"]["bert"]
    assert "pooler" in trees["sequence"]["bert"]
    assert trees["bert"]["tok_embed"].shape == (128, 32) and trees["pretraining"]["mlm"]["bias"].shape == (128,)
    assert trees["bert"]["layers_0"]["attn"]["c_attn"]["kernel"].shape == (3, 4, 8, 32)
    assert trees["sequence"]["classifier"]["kernel"].shape == (3, 32)
    assert trees["token"]["classifier"]["kernel"].shape == (5, 32)


@pytest.mark.parametrize("size, published", [("tiny", 4_385_920), ("base", 109_482_240)])
def test_parameter_counts_match_the_published_bert_models(size, published):
    """google/bert_uncased_L-2_H-128_A-2 and bert-base-uncased (BertModel, 30,522 WordPiece ids); the padding rows
    of the table (30,522 -> 30,592) are the only extra parameters."""
    cfg = bert_config(size, vocab_size=30522)
    padding = (cfg.padded_vocab_size - cfg.vocab_size) * cfg.hidden
    assert count_params(shapes(Bert(cfg))) - padding == published


def test_sizes_follow_turc_et_al():
    assert {k: (v["layers"], v["hidden"]) for k, v in BERT_SIZES.items() if k != "smoke"} == {
        "tiny": (2, 128), "mini": (4, 256), "small": (4, 512), "medium": (8, 512), "base": (12, 768),
        "large": (24, 1024)}
    for size in BERT_SIZES:
        cfg = bert_config(size)
        assert cfg.head_dim == 64 or size == "smoke"
        assert cfg.intermediate == 4 * cfg.hidden


@functools.lru_cache(maxsize=None)
def _compiled(model, train: bool):
    return jax.jit(functools.partial(model.apply, train=train))


def run(model, params, *args, train: bool = False, **kw):
    """model.apply, jit-compiled once per (model, train, shapes): one program instead of op-by-op dispatch."""
    return _compiled(model, train)({"params": params}, *map(jnp.asarray, args), **kw)


def random_params(model, seed: int = 0):
    """Random fp32 params of the model's shapes, drawn with NumPy (no init program to run): N(0, 0.1^2) matrices
    and tables, LayerNorm scales 1 + N(0, 0.1^2), biases N(0, 0.1^2)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        x = 0.1 * rng.normal(size=leaf.shape)
        return (x + (getattr(path[-1], "key", None) == "scale")).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, nn.meta.unbox(shapes(model, length=4)))


def test_outputs_do_not_depend_on_padding_or_other_rows():
    """A sentence alone, and padded (junk ids and segments after it) in a batch with a longer one: the same
    hidden states, pooled output and logits at its real positions."""
    cfg = config()
    model = BertForPreTraining(cfg)
    params = random_params(model)
    rng = np.random.default_rng(0)
    sentence = rng.integers(5, VOCAB, (1, 6)).astype(np.int32)
    seg = np.array([[0, 0, 0, 1, 1, 1]], np.int32)
    alone_mlm, alone_nsp = run(model, params, sentence, seg)
    tokens = rng.integers(5, VOCAB, (2, 11)).astype(np.int32)
    segments = rng.integers(0, 2, (2, 11)).astype(np.int32)
    tokens[1, :6], segments[1, :6] = sentence[0], seg[0]
    mask = np.arange(11)[None] < np.array([[11], [6]])
    mlm, nsp = run(model, params, tokens, segments, mask)
    np.testing.assert_allclose(mlm[1, :6, :VOCAB], alone_mlm[0, :, :VOCAB], atol=1e-5, rtol=0)
    np.testing.assert_allclose(nsp[1], alone_nsp[0], atol=1e-5, rtol=0)
    assert np.all(np.isneginf(np.asarray(mlm)[..., VOCAB:])) and np.all(np.isfinite(np.asarray(mlm)[..., :VOCAB]))
    # the padding does reach the padded row without the mask: the test would see a leak
    unmasked, _ = run(model, params, tokens, segments, np.ones_like(mask))
    assert np.abs(np.asarray(unmasked[1, :6, :VOCAB]) - np.asarray(alone_mlm[0, :, :VOCAB])).max() > 1e-3


def test_token_classifier_is_padding_invariant_and_dropout_acts_only_in_training():
    cfg = config(dropout=0.1, attention_dropout=0.1)
    model = BertForTokenClassification(cfg, num_labels=5)
    params = random_params(model, seed=1)
    tokens = np.random.default_rng(1).integers(5, VOCAB, (2, 9)).astype(np.int32)
    mask = np.arange(9)[None] < np.array([[9], [4]])
    segments = np.zeros_like(tokens)
    logits = run(model, params, tokens, segments, mask)
    alone = run(model, params, tokens[1:, :4], segments[1:, :4], mask[1:, :4])
    np.testing.assert_allclose(logits[1, :4], alone[0], atol=1e-5, rtol=0)
    rngs = {"dropout": jax.random.key(3)}
    train = run(model, params, tokens, segments, mask, train=True, rngs=rngs)
    again = run(model, params, tokens, segments, mask, train=True, rngs=rngs)
    np.testing.assert_array_equal(train, again)
    assert np.abs(np.asarray(train) - np.asarray(logits)).max() > 1e-3


def test_bert_inputs_format_pairs_and_truncate_longest_first():
    """A stand-in tokenizer: [PAD] 0, [CLS] 1, [SEP] 2, and a text is its ids."""
    tokenizer = types.SimpleNamespace(pad_id=0, cls_id=1, sep_id=2,
                                      encode=lambda text: np.array([int(w) for w in text.split()], np.int32))
    out = bert_inputs(tokenizer, ["10 11", "10 11 12 13 14 15"], ["20 21 22", "20 21"], max_len=9)
    np.testing.assert_array_equal(out["tokens"], [[1, 10, 11, 2, 20, 21, 22, 2, 0],
                                                  [1, 10, 11, 12, 13, 2, 20, 21, 2]])  # the longer A is cut
    np.testing.assert_array_equal(out["segments"], [[0, 0, 0, 0, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(out["mask"].sum(1), [8, 9])
    both = bert_inputs(tokenizer, ["10 11 12 13 14"], ["20 21 22 23 24"], max_len=8)  # 5 + 5 into 5: A 2, B 3
    np.testing.assert_array_equal(both["tokens"], [[1, 10, 11, 2, 20, 21, 22, 2]])
    single = bert_inputs(tokenizer, ["10 11 12 13"], max_len=4)
    np.testing.assert_array_equal(single["tokens"], [[1, 10, 11, 2]])
    with pytest.raises(ValueError, match="special tokens"):
        bert_inputs(tokenizer, ["10"], ["20"], max_len=2)
    with pytest.raises(ValueError, match="one pair per text"):
        bert_inputs(tokenizer, ["10"], ["20", "21"], max_len=8)


def test_config_errors_are_one_line_and_name_the_fix():
    with pytest.raises(ConfigError, match="multiple of model.heads"):
        config(hidden=30).validate()
    with pytest.raises(ConfigError, match="activation"):
        config(activation="swish").validate()
    with pytest.raises(ConfigError, match="unknown BERT size"):
        bert_config("huge")
    with pytest.raises(ConfigError, match="vocab_size"):
        shapes(Bert(config(vocab_size=0)))
    with pytest.raises(ValueError, match="max_position=16"):
        shapes(Bert(config()), length=17)
