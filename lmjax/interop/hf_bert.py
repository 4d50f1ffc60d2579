"""BERT checkpoints in Hugging Face's format (`save_pretrained` directories) to and from lmjax BERT parameters.

A directory holds `config.json` (a `BertConfig`), the weights as `model.safetensors` (or a sharded index) or a
PyTorch `pytorch_model.bin` state dict, and the tokenizer: `vocab.txt` with `tokenizer_config.json` (or HF's
`tokenizer.json`). HF's nn.Linear weights are stored (out, in), as lmjax's `Linear`; only the heads are split out.
Per layer i (`bert.encoder.layer.{i}.`, without the `bert.` prefix in a bare BertModel):

    attention.self.{query,key,value}.weight [C, C] -> attn/c_attn/kernel [3, H, D, C]     (stacked, heads split)
    attention.output.dense.weight [C, C]           -> attn/c_proj/kernel [C, H, D]         (input axis split)
    attention.output.LayerNorm                     -> ln_1;     output.LayerNorm -> ln_2
    intermediate.dense / output.dense              -> mlp/c_fc / mlp/c_proj

and embeddings.{word,position,token_type}_embeddings -> tok_embed, pos_embed, seg_embed, embeddings.LayerNorm ->
ln_embed, pooler.dense -> pooler; heads: cls.predictions.transform.{dense, LayerNorm} -> mlm/{dense, ln},
cls.predictions.bias -> mlm/bias, cls.seq_relationship -> nsp, classifier -> classifier. The token table and the
MLM bias get zero rows from vocab_size up to the padded vocabulary on the way in and lose them on the way out; the
MLM decoder is tied to the token table, so its weight (and its bias, tied to cls.predictions.bias) is not written,
as save_pretrained does. Old checkpoints' LayerNorm.gamma / .beta read as .weight / .bias.

The mapping is exact: HF's BERT and lmjax's compute the same function (exact GELU for "gelu", LayerNorm eps 1e-12,
1/sqrt(D) attention scaling, padded keys masked), so outputs agree to float rounding. Architectures:

    BertModel                        -> Bert (the pooler if the checkpoint has one)
    BertForPreTraining               -> BertForPreTraining                      {"bert", "mlm", "nsp"}
    BertForMaskedLM                  -> BertForPreTraining(nsp=False)            {"bert", "mlm"}
    BertForSequenceClassification    -> BertForSequenceClassification           {"bert", "classifier"}
    BertForTokenClassification       -> BertForTokenClassification              {"bert", "classifier"}, no pooler

    cfg, params, tokenizer = load_hf_bert("path/to/bert")    # the architecture config.json names, or architecture=
    model = module_for(cfg, params)                            # the lmjax module those params belong to
    save_hf_bert("out/", cfg, params, tokenizer)               # AutoModel / BertTokenizerFast.from_pretrained load it
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from lmjax.config import ConfigError
from lmjax.data import DataError
from lmjax.data.tokenizers import TOKENIZER_FILE, WordPieceTokenizer
from lmjax.interop.hf_gpt2 import SAFETENSORS, TORCH_BIN, _read_state
from lmjax.models.bert import (Bert, BertConfig, BertForPreTraining, BertForSequenceClassification,
                               BertForTokenClassification)

VOCAB_FILE = "vocab.txt"
TOKENIZER_CONFIG = "tokenizer_config.json"
ARCHITECTURES = ("BertModel", "BertForPreTraining", "BertForMaskedLM", "BertForSequenceClassification",
                 "BertForTokenClassification")
# HF activation names <-> lmjax.layers.ACTIVATIONS
_ACT_IN = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
           "relu": "relu"}
_ACT_OUT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


# ----------------------------------------------------------------------------------------------------------- config


def config_from_hf(hf: Mapping[str, Any]) -> BertConfig:
    """The BertConfig computing the same function as an HF BertConfig (as a dict); a one-line ConfigError for any
    option lmjax's BERT does not implement."""
    if hf.get("model_type", "bert") != "bert":
        raise ConfigError(f"config.json has model_type={hf.get('model_type')!r}: only BERT checkpoints ('bert') load "
                          f"into lmjax's BERT")
    act = hf.get("hidden_act", "gelu")
    unsupported = {"hidden_act": act not in _ACT_IN,
                   "position_embedding_type": hf.get("position_embedding_type", "absolute") != "absolute",
                   "is_decoder": hf.get("is_decoder", False),
                   "add_cross_attention": hf.get("add_cross_attention", False)}
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConfigError(f"config.json sets {', '.join(f'{k}={hf.get(k)!r}' for k in bad)}, which lmjax's BERT does "
                          f"not implement: use a standard BERT encoder (gelu, absolute positions, not a decoder)")
    cfg = BertConfig(vocab_size=hf["vocab_size"], hidden=hf["hidden_size"], layers=hf["num_hidden_layers"],
                     heads=hf["num_attention_heads"], intermediate=hf["intermediate_size"],
                     max_position=hf.get("max_position_embeddings", 512), type_vocab=hf.get("type_vocab_size", 2),
                     dropout=hf.get("hidden_dropout_prob", 0.1),
                     attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
                     classifier_dropout=hf.get("classifier_dropout"), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
                     activation=_ACT_IN[act], init_std=hf.get("initializer_range", 0.02))
    cfg.validate()
    return cfg


def config_to_hf(cfg: BertConfig, architecture: str = "BertModel", num_labels: int | None = None,
                 pad_id: int = 0) -> dict[str, Any]:
    """The config.json of an HF `architecture` computing the same function as `cfg` (num_labels for classifiers)."""
    _check_architecture(architecture)
    hf = {"architectures": [architecture], "model_type": "bert", "vocab_size": cfg.vocab_size,
          "hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers, "num_attention_heads": cfg.heads,
          "intermediate_size": cfg.intermediate, "hidden_act": _ACT_OUT[cfg.activation],
          "hidden_dropout_prob": cfg.dropout, "attention_probs_dropout_prob": cfg.attention_dropout,
          "classifier_dropout": cfg.classifier_dropout, "max_position_embeddings": cfg.max_position,
          "type_vocab_size": cfg.type_vocab, "initializer_range": cfg.init_std, "layer_norm_eps": cfg.layer_norm_eps,
          "pad_token_id": pad_id, "position_embedding_type": "absolute", "tie_word_embeddings": True,
          "dtype": "float32"}
    if num_labels is not None:
        hf["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_labels)}
        hf["label2id"] = {f"LABEL_{i}": i for i in range(num_labels)}
    return hf


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"architecture {architecture!r} is not one lmjax's BERT implements: choose one of "
                          f"{', '.join(ARCHITECTURES)}")


# ------------------------------------------------------------------------------------------------------ architecture


def bert_module(cfg: BertConfig, architecture: str = "BertModel", *, num_labels: int = 2, pooler: bool = True,
                dtype: Any = jnp.float32) -> nn.Module:
    """The lmjax module of an HF architecture (`pooler` only for BertModel; `num_labels` for the classifiers)."""
    _check_architecture(architecture)
    if architecture == "BertModel":
        return Bert(cfg, add_pooler=pooler, dtype=dtype)
    if architecture in ("BertForPreTraining", "BertForMaskedLM"):
        return BertForPreTraining(cfg, nsp=architecture == "BertForPreTraining", dtype=dtype)
    if architecture == "BertForSequenceClassification":
        return BertForSequenceClassification(cfg, num_labels, dtype=dtype)
    return BertForTokenClassification(cfg, num_labels, dtype=dtype)


def architecture_of(params: Mapping[str, Any]) -> str:
    """The HF architecture whose weights `params` (an lmjax BERT parameter tree) hold."""
    if "bert" not in params:
        return "BertModel"
    if "mlm" in params:
        return "BertForPreTraining" if "nsp" in params else "BertForMaskedLM"
    if "classifier" in params:
        pooled = "pooler" in params["bert"]
        return "BertForSequenceClassification" if pooled else "BertForTokenClassification"
    raise DataError(f"parameters with top-level keys {sorted(params)} are no lmjax BERT's: expect a Bert tree or "
                    f"'bert' with 'mlm' (and 'nsp') or 'classifier'")


def num_labels_of(params: Mapping[str, Any]) -> int | None:
    """The classifier's number of labels, or None for a model without one."""
    if "classifier" not in params:
        return None
    return int(nn.meta.unbox(params["classifier"]["bias"]).shape[0])


def module_for(cfg: BertConfig, params: Mapping[str, Any], dtype: Any = jnp.float32) -> nn.Module:
    """The lmjax module `params` belong to (its architecture, pooler and number of labels read off the tree)."""
    architecture = architecture_of(params)
    trunk = params.get("bert", params)
    return bert_module(cfg, architecture, num_labels=num_labels_of(params) or 2, pooler="pooler" in trunk,
                       dtype=dtype)


# ---------------------------------------------------------------------------------------------------------- weights


def _normalize_keys(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """fp32 NumPy tensors, old checkpoints' LayerNorm.gamma / .beta renamed .weight / .bias (as HF does on load)."""
    out = {}
    for key, value in state.items():
        if key.endswith(".gamma"):
            key = key.removesuffix(".gamma") + ".weight"
        elif key.endswith(".beta"):
            key = key.removesuffix(".beta") + ".bias"
        out[key] = np.asarray(value, np.float32)
    return out


def params_from_hf(state: Mapping[str, Any], cfg: BertConfig, architecture: str = "BertModel") -> dict[str, Any]:
    """lmjax parameters (fp32 jnp arrays) of `architecture` from an HF BERT state dict of NumPy arrays.

    The trunk reads from any BERT checkpoint (with or without the `bert.` prefix), so architecture="BertModel"
    takes a pretrained trunk out of a checkpoint of any head, e.g. for fine-tuning; BertModel gets the pooler if the
    checkpoint has one. The heads must be in the checkpoint."""
    _check_architecture(architecture)
    state = _normalize_keys(state)
    prefixed = any(k.startswith("bert.") for k in state)
    C, H, D, V_pad = cfg.hidden, cfg.heads, cfg.head_dim, cfg.padded_vocab_size

    def get(name: str, trunk: bool = True) -> np.ndarray:
        key = f"bert.{name}" if trunk and prefixed else name
        if key not in state:
            raise DataError(f"the checkpoint has no tensor {key!r}: is it a BERT checkpoint of this config "
                            f"({cfg.layers} layers) with the {architecture} weights?")
        return state[key]

    def linear(prefix: str, trunk: bool = True) -> dict[str, np.ndarray]:
        return {"kernel": get(f"{prefix}.weight", trunk), "bias": get(f"{prefix}.bias", trunk)}

    def ln(prefix: str, trunk: bool = True) -> dict[str, np.ndarray]:
        return {"scale": get(f"{prefix}.weight", trunk), "bias": get(f"{prefix}.bias", trunk)}

    def pad_rows(x: np.ndarray) -> np.ndarray:
        if x.shape[0] != cfg.vocab_size:
            raise DataError(f"the checkpoint's vocabulary has {x.shape[0]} rows, config.json says vocab_size="
                            f"{cfg.vocab_size}: config.json does not describe these weights")
        return np.pad(x, [(0, V_pad - x.shape[0])] + [(0, 0)] * (x.ndim - 1))

    trunk: dict[str, Any] = {
        "tok_embed": pad_rows(get("embeddings.word_embeddings.weight")),
        "pos_embed": get("embeddings.position_embeddings.weight"),
        "seg_embed": get("embeddings.token_type_embeddings.weight"),
        "ln_embed": ln("embeddings.LayerNorm"),
    }
    for i in range(cfg.layers):
        p = f"encoder.layer.{i}"
        qkv = [get(f"{p}.attention.self.{n}.weight") for n in ("query", "key", "value")]
        qkv_bias = [get(f"{p}.attention.self.{n}.bias") for n in ("query", "key", "value")]
        out = get(f"{p}.attention.output.dense.weight")
        trunk[f"layers_{i}"] = {
            "attn": {"c_attn": {"kernel": np.stack(qkv).reshape(3, H, D, C),
                                "bias": np.stack(qkv_bias).reshape(3, H, D)},
                     "c_proj": {"kernel": out.reshape(C, H, D), "bias": get(f"{p}.attention.output.dense.bias")}},
            "ln_1": ln(f"{p}.attention.output.LayerNorm"),
            "mlp": {"c_fc": linear(f"{p}.intermediate.dense"), "c_proj": linear(f"{p}.output.dense")},
            "ln_2": ln(f"{p}.output.LayerNorm"),
        }
    pooler = architecture in ("BertForPreTraining", "BertForSequenceClassification") or (
        architecture == "BertModel" and ("bert.pooler.dense.weight" if prefixed else "pooler.dense.weight") in state)
    if pooler:
        trunk["pooler"] = linear("pooler.dense")

    if architecture == "BertModel":
        params = trunk
    else:
        params = {"bert": trunk}
        if architecture in ("BertForPreTraining", "BertForMaskedLM"):
            bias = state.get("cls.predictions.bias", state.get("cls.predictions.decoder.bias"))
            if bias is None:
                get("cls.predictions.bias", trunk=False)  # raises the missing-tensor error
            params["mlm"] = {"dense": linear("cls.predictions.transform.dense", trunk=False),
                             "ln": ln("cls.predictions.transform.LayerNorm", trunk=False), "bias": pad_rows(bias)}
            if architecture == "BertForPreTraining":
                params["nsp"] = linear("cls.seq_relationship", trunk=False)
        else:
            params["classifier"] = linear("classifier", trunk=False)
    _check_shapes(params, cfg)
    return jax.tree.map(jnp.asarray, params)


def params_to_hf(params: Mapping[str, Any], cfg: BertConfig) -> dict[str, np.ndarray]:
    """The HF state dict (fp32 NumPy, contiguous) of lmjax BERT parameters (boxed or not), in the naming of their
    architecture (`architecture_of`); the tied MLM decoder is left out, as save_pretrained does."""
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), nn.meta.unbox(params))
    architecture = architecture_of(params)
    V, C = cfg.vocab_size, cfg.hidden
    trunk = params.get("bert", params)
    pre = "" if architecture == "BertModel" else "bert."

    def linear(name: str, p: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"{name}.weight": p["kernel"], f"{name}.bias": p["bias"]}

    def ln(name: str, p: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {f"{name}.weight": p["scale"], f"{name}.bias": p["bias"]}

    out = {f"{pre}embeddings.word_embeddings.weight": trunk["tok_embed"][:V],
           f"{pre}embeddings.position_embeddings.weight": trunk["pos_embed"],
           f"{pre}embeddings.token_type_embeddings.weight": trunk["seg_embed"],
           **ln(f"{pre}embeddings.LayerNorm", trunk["ln_embed"])}
    for i in range(cfg.layers):
        h, p = trunk[f"layers_{i}"], f"{pre}encoder.layer.{i}"
        attn = h["attn"]
        for j, name in enumerate(("query", "key", "value")):
            out[f"{p}.attention.self.{name}.weight"] = attn["c_attn"]["kernel"][j].reshape(C, C)
            out[f"{p}.attention.self.{name}.bias"] = attn["c_attn"]["bias"][j].reshape(C)
        out[f"{p}.attention.output.dense.weight"] = attn["c_proj"]["kernel"].reshape(C, C)
        out[f"{p}.attention.output.dense.bias"] = attn["c_proj"]["bias"]
        out.update(ln(f"{p}.attention.output.LayerNorm", h["ln_1"]))
        out.update(linear(f"{p}.intermediate.dense", h["mlp"]["c_fc"]))
        out.update(linear(f"{p}.output.dense", h["mlp"]["c_proj"]))
        out.update(ln(f"{p}.output.LayerNorm", h["ln_2"]))
    if "pooler" in trunk:
        out.update(linear(f"{pre}pooler.dense", trunk["pooler"]))
    if "mlm" in params:
        mlm = params["mlm"]
        out.update(linear("cls.predictions.transform.dense", mlm["dense"]))
        out.update(ln("cls.predictions.transform.LayerNorm", mlm["ln"]))
        out["cls.predictions.bias"] = mlm["bias"][:V]
    if "nsp" in params:
        out.update(linear("cls.seq_relationship", params["nsp"]))
    if "classifier" in params:
        out.update(linear("classifier", params["classifier"]))
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _check_shapes(params: Mapping[str, Any], cfg: BertConfig) -> None:
    """Every tensor has the shape the lmjax module of `cfg` expects (a config/weights mismatch is a one-line error)."""
    model = module_for(cfg, params)
    tokens = jnp.zeros((1, 1), jnp.int32)
    expected = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), tokens))["params"]
    if jax.tree.structure(expected) != jax.tree.structure(params):
        raise DataError("the checkpoint's tensors do not form lmjax's BERT parameter tree: is it a BERT checkpoint?")
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree_util.tree_leaves(params)):
        if want.shape != got.shape:
            raise DataError(f"checkpoint tensor for {jax.tree_util.keystr(path)} has shape {got.shape}, the config "
                            f"says {want.shape}: config.json does not describe these weights")


# -------------------------------------------------------------------------------------------------------- tokenizer


def wordpiece_from_vocab(vocab_txt: str | os.PathLike, *, lowercase: bool = True, strip_accents: bool | None = None,
                         tokenize_chinese_chars: bool = True) -> WordPieceTokenizer:
    """BERT's WordPiece from `vocab.txt`, the pipeline of HF's BertTokenizerFast: BertNormalizer (clean text, CJK
    characters split out, accents stripped when lowercasing unless strip_accents says otherwise), BertPreTokenizer,
    `##` pieces, [PAD] [UNK] [CLS] [SEP] [MASK] as special tokens (matched whole in the text, never normalized) and
    [CLS] A [SEP] B [SEP] as the post-processor (which `encode` does not add: see `lmjax.models.bert.bert_inputs`)."""
    path = Path(vocab_txt)
    if not path.is_file():
        raise DataError(f"{path} is missing: point at BERT's vocab.txt (one piece per line)")
    tokenizer = tokenizers.Tokenizer(models.WordPiece.from_file(os.fspath(path), unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                                      strip_accents=strip_accents, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    specials = [t for t in WordPieceTokenizer.SPECIALS if tokenizer.token_to_id(t) is not None]
    tokenizer.add_special_tokens(specials)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    if cls_id is not None and sep_id is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return WordPieceTokenizer(tokenizer)


def load_hf_bert_tokenizer(directory: str | os.PathLike) -> WordPieceTokenizer:
    """The tokenizer of a BERT checkpoint directory: its `tokenizer.json` if there is one (HF's serialized
    pipeline), else `vocab.txt` with tokenizer_config.json's do_lower_case (default true), strip_accents and
    tokenize_chinese_chars."""
    directory = Path(directory)
    if (directory / TOKENIZER_FILE).is_file():
        tokenizer = tokenizers.Tokenizer.from_file(os.fspath(directory / TOKENIZER_FILE))
        if type(tokenizer.model).__name__ != "WordPiece":
            raise DataError(f"{directory / TOKENIZER_FILE} holds a {type(tokenizer.model).__name__} tokenizer, not "
                            f"BERT's WordPiece: remove it to read {VOCAB_FILE}")
        return WordPieceTokenizer(tokenizer)
    options = {}
    if (directory / TOKENIZER_CONFIG).is_file():
        options = json.loads((directory / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    return wordpiece_from_vocab(directory / VOCAB_FILE, lowercase=options.get("do_lower_case", True),
                                strip_accents=options.get("strip_accents"),
                                tokenize_chinese_chars=options.get("tokenize_chinese_chars", True))


def save_hf_bert_tokenizer(directory: str | os.PathLike, tokenizer: WordPieceTokenizer,
                           model_max_length: int = 512) -> Path:
    """Write vocab.txt (the pieces in id order) and tokenizer_config.json (the normalizer's options), which
    BertTokenizerFast.from_pretrained and `load_hf_bert_tokenizer` read."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab = tokenizer.tokenizer.get_vocab(with_added_tokens=True)
    pieces = sorted(vocab, key=vocab.get)
    if [vocab[p] for p in pieces] != list(range(len(pieces))) or any("\n" in p for p in pieces):
        raise DataError("the tokenizer's ids are not 0..V-1 over single-line pieces, so no vocab.txt can hold them: "
                        "save it with tokenizer.save(directory) instead")
    norm = tokenizer.tokenizer.normalizer
    if not isinstance(norm, normalizers.BertNormalizer):
        raise DataError(f"the tokenizer's normalizer is {type(norm).__name__}, not BERT's BertNormalizer: only BERT's "
                        f"WordPiece pipeline can be written as vocab.txt")
    (directory / VOCAB_FILE).write_text("".join(p + "\n" for p in pieces), encoding="utf-8")
    options = {"tokenizer_class": "BertTokenizer", "do_lower_case": norm.lowercase, "strip_accents": norm.strip_accents,
               "tokenize_chinese_chars": norm.handle_chinese_chars, "model_max_length": model_max_length,
               **{f"{role}_token": f"[{role.upper()}]" for role in ("pad", "unk", "cls", "sep", "mask")}}
    (directory / TOKENIZER_CONFIG).write_text(json.dumps(options, indent=2) + "\n", encoding="utf-8")
    return directory


# -------------------------------------------------------------------------------------------------------- directory


def load_hf_bert(directory: str | os.PathLike, architecture: str | None = None,
                 ) -> tuple[BertConfig, dict[str, Any], WordPieceTokenizer | None]:
    """(BertConfig, params, tokenizer) from an HF BERT directory; params of `architecture` (default: the first of
    config.json's "architectures", else BertModel; `module_for(cfg, params)` builds its module); the tokenizer is
    None when the directory has neither vocab.txt nor tokenizer.json."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise DataError(f"{directory / 'config.json'} is missing: point at a directory written by save_pretrained")
    hf = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    cfg = config_from_hf(hf)
    if architecture is None:
        architecture = (hf.get("architectures") or ["BertModel"])[0]
    _check_architecture(architecture)
    params = params_from_hf(_read_state(directory), cfg, architecture)
    has_tokenizer = (directory / VOCAB_FILE).is_file() or (directory / TOKENIZER_FILE).is_file()
    return cfg, params, load_hf_bert_tokenizer(directory) if has_tokenizer else None


def save_hf_bert(directory: str | os.PathLike, cfg: BertConfig, params: Mapping[str, Any],
                 tokenizer: WordPieceTokenizer | None = None, *, safe_serialization: bool = True) -> Path:
    """Write config.json, model.safetensors (or pytorch_model.bin) and, given a tokenizer, vocab.txt and
    tokenizer_config.json, which HF's `from_pretrained` of the params' architecture loads."""
    if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} ids, the model's vocab_size is {cfg.vocab_size}: "
                          f"save the tokenizer the model was trained with")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = params_to_hf(params, cfg)
    pad_id = 0 if tokenizer is None or tokenizer.pad_id is None else tokenizer.pad_id
    hf = config_to_hf(cfg, architecture_of(nn.meta.unbox(params)), num_labels_of(params), pad_id=pad_id)
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n", encoding="utf-8")
    if safe_serialization:
        from safetensors.numpy import save_file

        save_file(state, directory / SAFETENSORS, metadata={"format": "pt"})
    else:
        import torch

        torch.save({k: torch.tensor(v) for k, v in state.items()}, directory / TORCH_BIN)
    if tokenizer is not None:
        save_hf_bert_tokenizer(directory, tokenizer, cfg.max_position)
    return directory
