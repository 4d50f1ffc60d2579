"""HF BERT <-> lmjax BERT: random tiny BertModel / BertForPreTraining / BertForMaskedLM / BertForSequenceClassification
/ BertForTokenClassification checkpoints (no download) give the same outputs in lmjax under padding masks, export
back to directories HF loads, and BERT's WordPiece reads vocab.txt into the ids of HF's BertTokenizerFast."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import ConfigError
from lmjax.data import DataError
from lmjax.data.tokenizers import WordPieceTokenizer
from lmjax.interop.hf_bert import (architecture_of, config_from_hf, load_hf_bert, load_hf_bert_tokenizer,
                                   module_for, params_from_hf, params_to_hf, save_hf_bert, wordpiece_from_vocab)
from lmjax.models.bert import bert_inputs

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 99  # not a multiple of 128: the padded rows and columns must stay out of every comparison
WIDTH, LENGTHS = 12, (12, 7, 3)  # one full row, two padded ones


def hf_config(**kw):
    return transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=48, max_position_embeddings=32, type_vocab_size=2, **kw)


def perturbed(cls, seed: int, **kw):
    """A random HF model in eval mode with every weight perturbed (LayerNorms and biases too, the tied decoder
    with its table)."""
    torch.manual_seed(seed)
    model = cls(hf_config(**kw)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    """{architecture: (model, safetensors directory)}, and a pytorch_model.bin copy of the pretraining model."""
    out = {}
    for seed, name, kw in ((0, "BertForPreTraining", {}), (1, "BertForMaskedLM", {}),
                           (2, "BertForSequenceClassification", {"num_labels": 3}),
                           (3, "BertForTokenClassification", {"num_labels": 5})):
        model = perturbed(getattr(transformers, name), seed, **kw)
        directory = tmp_path_factory.mktemp(name)
        model.save_pretrained(directory)
        out[name] = (model, directory)
    model, _ = out["BertForPreTraining"]
    binary = tmp_path_factory.mktemp("bin")
    model.config.save_pretrained(binary)
    torch.save(model.state_dict(), binary / "pytorch_model.bin")
    out["bin"] = (model, binary)
    return out


def batch(seed: int, pair: bool = False):
    """tokens [3, WIDTH] with junk (not [PAD]) after each row's length, segments (0 | 1 halfway with pair), mask."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, VOCAB, (len(LENGTHS), WIDTH)).astype(np.int32)
    mask = np.arange(WIDTH)[None] < np.asarray(LENGTHS)[:, None]
    segments = np.zeros_like(tokens)
    if pair:
        segments = (np.arange(WIDTH)[None] >= np.asarray(LENGTHS)[:, None] // 2).astype(np.int32) * mask
    return tokens, segments, mask


def hf_run(model, tokens, segments, mask):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(tokens).long(), token_type_ids=torch.from_numpy(segments).long(),
                     attention_mask=torch.from_numpy(mask).long())


def ours(cfg, params, tokens, segments, mask, **kw):
    return module_for(cfg, params).apply({"params": params}, jnp.asarray(tokens), jnp.asarray(segments),
                                         jnp.asarray(mask), **kw)


def close_at_real(a, b, mask, atol=1e-4):
    """a, b [B, T, ...] agree at the real positions."""
    np.testing.assert_allclose(np.asarray(a)[mask], np.asarray(b)[mask], atol=atol, rtol=0)


# ----------------------------------------------------------------------------------------------------------- models


def test_bert_model_hidden_states_and_pooled_output_from_safetensors_and_torch_bin(hf_dirs):
    model, _ = hf_dirs["BertForPreTraining"]
    tokens, segments, mask = batch(0, pair=True)
    want = hf_run(model.bert, tokens, segments, mask)
    for directory in (hf_dirs["BertForPreTraining"][1], hf_dirs["bin"][1]):
        cfg, params, tokenizer = load_hf_bert(directory, architecture="BertModel")  # the trunk of a pretraining model
        assert tokenizer is None and architecture_of(params) == "BertModel" and "pooler" in params
        assert (cfg.vocab_size, cfg.hidden, cfg.layers, cfg.heads, cfg.intermediate) == (VOCAB, 32, 2, 4, 48)
        assert (cfg.activation, cfg.layer_norm_eps, params["tok_embed"].shape) == ("gelu", 1e-12, (128, 32))
        hidden, pooled = ours(cfg, params, tokens, segments, mask)
        close_at_real(hidden, want.last_hidden_state.numpy(), mask)
        np.testing.assert_allclose(pooled, want.pooler_output.numpy(), atol=1e-4, rtol=0)


def test_pretraining_mlm_and_nsp_logits(hf_dirs):
    model, directory = hf_dirs["BertForPreTraining"]
    tokens, segments, mask = batch(1, pair=True)
    want = hf_run(model, tokens, segments, mask)
    cfg, params, _ = load_hf_bert(directory)
    assert architecture_of(params) == "BertForPreTraining"
    mlm, nsp = ours(cfg, params, tokens, segments, mask)
    close_at_real(mlm[..., :VOCAB], want.prediction_logits.numpy(), mask)
    assert np.all(np.isneginf(np.asarray(mlm)[..., VOCAB:]))
    np.testing.assert_allclose(nsp, want.seq_relationship_logits.numpy(), atol=1e-4, rtol=0)
    # BERT predicts at the masked positions only: the same logits, gathered before the output projection.
    positions = np.array([[0, 5, 11], [1, 2, 6], [0, 1, 2]])
    at, _ = ours(cfg, params, tokens, segments, mask, masked_positions=jnp.asarray(positions))
    np.testing.assert_allclose(at, np.take_along_axis(np.asarray(mlm), positions[..., None], axis=1), atol=1e-5)


def test_masked_lm_logits(hf_dirs):
    model, directory = hf_dirs["BertForMaskedLM"]
    tokens, segments, mask = batch(2)
    cfg, params, _ = load_hf_bert(directory)
    assert architecture_of(params) == "BertForMaskedLM" and "pooler" not in params["bert"]
    mlm = ours(cfg, params, tokens, segments, mask)
    close_at_real(mlm[..., :VOCAB], hf_run(model, tokens, segments, mask).logits.numpy(), mask)


@pytest.mark.parametrize("pair", [False, True], ids=["single", "pair"])
def test_sequence_classification_logits(hf_dirs, pair):
    model, directory = hf_dirs["BertForSequenceClassification"]
    tokens, segments, mask = batch(3, pair=pair)
    cfg, params, _ = load_hf_bert(directory)
    logits = ours(cfg, params, tokens, segments, mask)
    assert logits.shape == (3, 3)
    np.testing.assert_allclose(logits, hf_run(model, tokens, segments, mask).logits.numpy(), atol=1e-4, rtol=0)


def test_token_classification_logits(hf_dirs):
    model, directory = hf_dirs["BertForTokenClassification"]
    tokens, segments, mask = batch(4, pair=True)
    cfg, params, _ = load_hf_bert(directory)
    assert architecture_of(params) == "BertForTokenClassification" and "pooler" not in params["bert"]
    logits = ours(cfg, params, tokens, segments, mask)
    assert logits.shape == (3, WIDTH, 5)
    close_at_real(logits, hf_run(model, tokens, segments, mask).logits.numpy(), mask)


# ------------------------------------------------------------------------------------------------------- round trip


def test_save_load_round_trip_of_an_hf_directory(hf_dirs, tmp_path):
    """load -> save (safetensors and torch) -> HF loads the same model, and lmjax reads back the same params."""
    for name in ("BertForPreTraining", "BertForSequenceClassification", "BertForTokenClassification"):
        model, directory = hf_dirs[name]
        cfg, params, _ = load_hf_bert(directory)
        # The exported state dict is HF's own, tensor for tensor, bar the tied MLM decoder (HF ties it on load).
        theirs = {k: v.numpy() for k, v in model.state_dict().items() if not k.startswith("cls.predictions.decoder")}
        exported = params_to_hf(params, cfg)
        assert exported.keys() == theirs.keys(), name
        for k in exported:
            np.testing.assert_array_equal(exported[k], theirs[k], err_msg=k)
        tokens, segments, mask = batch(5, pair=True)
        for safe in (True, False):
            out = save_hf_bert(tmp_path / f"{name}-{safe}", cfg, params, safe_serialization=safe)
            assert (out / ("model.safetensors" if safe else "pytorch_model.bin")).is_file()
            reloaded = getattr(transformers, name).from_pretrained(out).eval()
            for a, b in zip(hf_run(reloaded, tokens, segments, mask).values(),
                            hf_run(model, tokens, segments, mask).values()):
                np.testing.assert_array_equal(a.numpy(), b.numpy())
            cfg2, params2, _ = load_hf_bert(out)
            assert cfg2 == cfg
            assert jax_equal(params2, params), name


def jax_equal(a, b) -> bool:
    import jax

    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_bad_checkpoints_are_one_line_errors(hf_dirs, tmp_path):
    _, directory = hf_dirs["BertForPreTraining"]
    hf = json.loads((directory / "config.json").read_text())
    with pytest.raises(ConfigError, match="position_embedding_type"):
        config_from_hf({**hf, "position_embedding_type": "relative_key"})
    with pytest.raises(ConfigError, match="is_decoder"):
        config_from_hf({**hf, "is_decoder": True})
    with pytest.raises(ConfigError, match="BertForQuestionAnswering"):
        load_hf_bert(directory, architecture="BertForQuestionAnswering")
    with pytest.raises(DataError, match="save_pretrained"):
        load_hf_bert(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**hf, "num_hidden_layers": 3}))
    (tmp_path / "model.safetensors").symlink_to(directory / "model.safetensors")
    with pytest.raises(DataError, match="layer.2"):
        load_hf_bert(tmp_path)
    _, classifier = hf_dirs["BertForSequenceClassification"]
    with pytest.raises(DataError, match="cls.predictions"):  # a checkpoint without the heads asked for
        load_hf_bert(classifier, architecture="BertForPreTraining")


def test_old_checkpoint_names_gamma_beta_and_decoder_bias(hf_dirs):
    """Google's original conversions name LayerNorms gamma/beta and keep the MLM bias as decoder.bias."""
    model, _ = hf_dirs["BertForPreTraining"]
    cfg = config_from_hf(model.config.to_dict())
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
           for k, v in state.items() if k != "cls.predictions.bias"}
    assert jax_equal(params_from_hf(old, cfg, "BertForPreTraining"), params_from_hf(state, cfg, "BertForPreTraining"))


# -------------------------------------------------------------------------------------------------------- tokenizer

VOCAB_TXT = """[PAD] [UNK] [CLS] [SEP] [MASK] the a is and it ' s . , ! ? - ( ) $ " 5 0 ##0 hello world hell ##o
Hello World The cafe café caf ##e ##é naive naïve na ##ive resume résumé über uber Über ##s ##ing ##ed jump cool
日 本 語 中 文 字 x ##x un ##known ##word 🙂 ok full width""".split()

TEXTS = [
    "Hello, World! The café's naïve résumé.",
    "日本語 and 中文字 mixed with テキスト",
    "Über-cool über jumping jumped JUMPING",
    "unknownword unknown " + "x" * 120,  # a word over max_input_chars_per_word (100) is one [UNK]
    "tabs\tand\nnew lines\u00a0nbsp\u200bzero-width \x00control\ufffd",
    "$5.00 (it's) \"quoted\" — a dash; ＦＵＬＬ width 🙂 ok",
    "Cafe\u0301 (a combining accent) and NAÏVE",
]
LITERAL_SPECIALS = "[CLS] the [MASK] is [SEP] a [PAD] word [UNK]"


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("vocab")
    (directory / "vocab.txt").write_text("".join(t + "\n" for t in VOCAB_TXT), encoding="utf-8")
    return directory


def hf_tokenizer(directory, **kw):
    return transformers.BertTokenizerFast.from_pretrained(directory, **kw)


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_wordpiece_from_vocab_file_matches_bert_tokenizer_fast(vocab_dir, lowercase):
    theirs = hf_tokenizer(vocab_dir, do_lower_case=lowercase)
    ours_ = WordPieceTokenizer.from_vocab_file(vocab_dir / "vocab.txt", lowercase=lowercase)
    exact = wordpiece_from_vocab(vocab_dir / "vocab.txt", lowercase=lowercase)
    unknown = 0
    for text in TEXTS:
        want = theirs.encode(text, add_special_tokens=False)
        assert list(ours_.encode(text)) == want, text
        assert list(exact.encode(text)) == want, text
        unknown += want.count(theirs.unk_token_id)
        assert ours_.decode(want) == theirs.decode(want)
    assert 0 < unknown < sum(len(theirs.encode(t, add_special_tokens=False)) for t in TEXTS)
    assert list(exact.encode(LITERAL_SPECIALS)) == theirs.encode(LITERAL_SPECIALS, add_special_tokens=False)


def test_from_vocab_file_matches_special_tokens_written_in_the_text(vocab_dir):
    ours_ = WordPieceTokenizer.from_vocab_file(vocab_dir / "vocab.txt")
    assert list(ours_.encode(LITERAL_SPECIALS)) == hf_tokenizer(vocab_dir).encode(LITERAL_SPECIALS,
                                                                                   add_special_tokens=False)


@pytest.mark.parametrize("options", [dict(do_lower_case=False, strip_accents=True),
                                     dict(do_lower_case=True, strip_accents=False),
                                     dict(do_lower_case=True, tokenize_chinese_chars=False)],
                         ids=["cased-stripped", "uncased-accents", "no-cjk-split"])
def test_tokenizer_config_options_match_hf(vocab_dir, tmp_path, options):
    (tmp_path / "vocab.txt").write_bytes((vocab_dir / "vocab.txt").read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(options))
    theirs, ours_ = hf_tokenizer(tmp_path), load_hf_bert_tokenizer(tmp_path)
    for text in TEXTS:
        assert list(ours_.encode(text)) == theirs.encode(text, add_special_tokens=False), text


def test_bert_inputs_match_hf_pairs_truncation_and_padding(vocab_dir, hf_dirs, tmp_path):
    theirs, ours_ = hf_tokenizer(vocab_dir), wordpiece_from_vocab(vocab_dir / "vocab.txt")
    # first shorter, longer, equal (on any budget), very short; longer with both truncated
    firsts = ["Hello, World!", TEXTS[0], TEXTS[2], "a", TEXTS[5]]
    seconds = [TEXTS[1], "the cafe", TEXTS[2], TEXTS[5], TEXTS[0]]
    for pairs in (None, seconds):
        for max_len in (3, 9, 10, 16, 24):
            want = theirs(firsts, pairs, truncation=True, padding="max_length", max_length=max_len)
            got = bert_inputs(ours_, firsts, pairs, max_len=max_len)
            np.testing.assert_array_equal(got["tokens"], want["input_ids"])
            np.testing.assert_array_equal(got["segments"], want["token_type_ids"])
            np.testing.assert_array_equal(got["mask"], np.asarray(want["attention_mask"], bool))
    # Through a checkpoint's tokenizer files: save_hf_bert writes them, HF and lmjax read them back alike.
    model, directory = hf_dirs["BertForSequenceClassification"]
    cfg, params, _ = load_hf_bert(directory)
    out = save_hf_bert(tmp_path / "with_tokenizer", cfg, params, ours_)
    _, _, reloaded = load_hf_bert(out)
    assert reloaded == ours_
    again = hf_tokenizer(out)
    for text in TEXTS:
        assert again.encode(text) == theirs.encode(text)
