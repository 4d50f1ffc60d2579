"""HF GPT-2 <-> lmjax GPT: a random GPT2LMHeadModel (no download) computes the same logits and greedy tokens in lmjax,
exports back to a directory HF loads, and GPT-2's BPE loads from vocab.json/merges.txt like HF's GPT2Tokenizer."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.config import ConfigError
from lmjax.data import DataError
from lmjax.interop.hf_gpt2 import (config_from_hf, load_hf_gpt2, load_hf_gpt2_tokenizer, params_to_hf,
                                   save_hf_gpt2)
from lmjax.models.gpt import GPT, generate

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 99  # not a multiple of 128: the padded columns must stay out of every comparison


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A random 2-layer GPT2LMHeadModel with every weight (biases and LayerNorms too) perturbed, saved twice: as
    safetensors by save_pretrained and as a pytorch_model.bin state dict."""
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                  bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    safe = tmp_path_factory.mktemp("hf_safetensors")
    model.save_pretrained(safe)
    binary = tmp_path_factory.mktemp("hf_bin")
    cfg.save_pretrained(binary)
    torch.save(model.state_dict(), binary / "pytorch_model.bin")
    return model, safe, binary


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens).long()).logits.numpy()


def test_import_gives_hf_logits_from_safetensors_and_torch_bin(hf_model):
    model, safe, binary = hf_model
    tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 32))
    want = hf_logits(model, tokens)
    cfg, _ = load_hf_gpt2(safe)
    apply = jax.jit(GPT(cfg).apply)  # one compilation for both checkpoints
    for directory in (safe, binary):
        cfg, params = load_hf_gpt2(directory)
        assert (cfg.vocab_size, cfg.gelu_approximate, cfg.tie_embeddings) == (VOCAB, True, True)
        logits = np.asarray(apply({"params": params}, jnp.asarray(tokens)))
        np.testing.assert_allclose(logits[..., :VOCAB], want, atol=1e-4, rtol=0)
        assert np.all(np.isneginf(logits[..., VOCAB:]))


def test_greedy_generation_matches_hf_for_prompts_of_different_lengths(hf_model):
    model, safe, _ = hf_model
    cfg, params = load_hf_gpt2(safe)
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, VOCAB - 1, n) for n in (3, 7)]
    padded = np.zeros((2, 7), np.int32)
    for row, p in zip(padded, prompts):
        row[: len(p)] = p
    new = 12
    ours = np.asarray(generate(GPT(cfg), params, jnp.asarray(padded), max_new_tokens=new,
                               prompt_lengths=jnp.asarray([3, 7]), temperature=0.0))
    for row, p in zip(ours, prompts):
        with torch.no_grad():
            theirs = model.generate(torch.from_numpy(p[None]).long(), attention_mask=torch.ones(1, len(p)).long(),
                                    do_sample=False, max_new_tokens=new, eos_token_id=None).numpy()[0]
        np.testing.assert_array_equal(row[: len(p) + new], theirs)


def test_export_loads_in_hf_with_the_same_logits(hf_model, tmp_path):
    model, safe, _ = hf_model
    cfg, params = load_hf_gpt2(safe)
    tokens = np.random.default_rng(2).integers(0, VOCAB, (2, 16))
    for safe_serialization in (True, False):
        out = save_hf_gpt2(tmp_path / str(safe_serialization), cfg, params, safe_serialization=safe_serialization)
        reloaded = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
        np.testing.assert_allclose(hf_logits(reloaded, tokens), hf_logits(model, tokens), atol=1e-5, rtol=0)
    # The exported state dict is HF's own, tensor for tensor (bar the tied lm_head, which HF ties on load).
    theirs = {k: v.numpy() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    ours = params_to_hf(params, cfg)
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)


def test_bad_checkpoints_are_one_line_errors(hf_model, tmp_path):
    _, safe, _ = hf_model
    hf_cfg = json.loads((safe / "config.json").read_text())
    with pytest.raises(ConfigError, match="scale_attn_by_inverse_layer_idx"):
        config_from_hf({**hf_cfg, "scale_attn_by_inverse_layer_idx": True})
    with pytest.raises(DataError, match="save_pretrained"):
        load_hf_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**hf_cfg, "n_layer": 3}))
    (tmp_path / "model.safetensors").symlink_to(safe / "model.safetensors")
    with pytest.raises(DataError, match="h.2"):
        load_hf_gpt2(tmp_path)


def test_gpt2_bpe_from_vocab_and_merges_encodes_like_hf(tmp_path):
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["The quick brown fox jumps over the lazy dog.", "It's 2024 -- isn't it?  Naïve café, déjà vu!"] * 20
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(corpus, trainer)
    bpe.model.save(str(tmp_path))  # vocab.json + merges.txt, GPT-2's file format

    ours = load_hf_gpt2_tokenizer(tmp_path)
    theirs = transformers.GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    text = "The lazy fox's café isn't naïve,\n  it jumps 42 times! 日本"
    ids = list(ours.encode(text))
    assert ids == theirs.encode(text)
    assert ours.decode(ids) == text
