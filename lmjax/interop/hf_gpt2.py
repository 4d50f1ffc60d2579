"""GPT-2 checkpoints in Hugging Face's format (`save_pretrained` directories) to and from lmjax GPT parameters.

A directory holds `config.json` (a `GPT2Config`) and the weights as `model.safetensors`, a sharded
`model.safetensors.index.json`, or a PyTorch `pytorch_model.bin` state_dict. HF's GPT-2 uses `Conv1D` layers whose
weights are stored (in, out); lmjax's `Linear` stores (out, in) with the heads split out, so per block

    c_attn.weight [C, 3C]  ->  attn/c_attn/kernel [3, H, D, C]   (transpose, then split 3C = (q|k|v, head, dim))
    attn.c_proj.weight [C, C] -> attn/c_proj/kernel [C, H, D]    (transpose, then split the input axis into heads)
    c_fc.weight [C, 4C]    ->  mlp/c_fc/kernel [4C, C];   mlp.c_proj.weight [4C, C] -> mlp/c_proj/kernel [C, 4C]
    ln_*.weight / .bias    ->  ln_*/scale / bias

and the token table is zero-padded from vocab_size to the padded vocabulary (its extra logits are -inf anyway). The
mapping is exact: HF's GPT-2 and lmjax's GPT compute the same function (tanh GELU for `gelu_new`, LayerNorm eps,
1/sqrt(D) attention scaling), so logits agree to float rounding.

    cfg, params = load_hf_gpt2("path/to/gpt2")             # GPTConfig, {"wte": ..., "h_0": {...}, ...}
    logits = GPT(cfg).apply({"params": params}, tokens)
    save_hf_gpt2("out/", cfg, params)                        # GPT2LMHeadModel.from_pretrained("out/") loads it
    tokenizer = load_hf_gpt2_tokenizer("path/to/gpt2")       # from vocab.json + merges.txt
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

from lmjax.config import ConfigError
from lmjax.data import DataError
from lmjax.data.tokenizers import BPETokenizer
from lmjax.models.gpt import GPT, GPTConfig

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_BIN = "pytorch_model.bin"
# HF activation names -> lmjax's GELU flavour (gelu_approximate).
_GELU = {"gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True, "gelu": False}


# ----------------------------------------------------------------------------------------------------------- config


def config_from_hf(hf: Mapping[str, Any]) -> GPTConfig:
    """The GPTConfig computing the same function as a GPT2Config (as a dict); a one-line ConfigError for any
    GPT-2 option lmjax's GPT does not implement."""
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ConfigError(f"config.json has model_type={hf.get('model_type')!r}: only GPT-2 checkpoints ('gpt2') "
                          f"load into lmjax's GPT")
    act = hf.get("activation_function", "gelu_new")
    unsupported = {"activation_function": act not in _GELU,
                   "scale_attn_weights": not hf.get("scale_attn_weights", True),
                   "scale_attn_by_inverse_layer_idx": hf.get("scale_attn_by_inverse_layer_idx", False),
                   "add_cross_attention": hf.get("add_cross_attention", False)}
    bad = [k for k, v in unsupported.items() if v]
    if bad:
        raise ConfigError(f"config.json sets {', '.join(f'{k}={hf.get(k)!r}' for k in bad)}, which lmjax's GPT "
                          f"does not implement: use a standard GPT-2 checkpoint (gelu_new, scaled attention)")
    n_embd = hf["n_embd"]
    n_inner = hf.get("n_inner") or 4 * n_embd
    if n_inner % n_embd:
        raise ConfigError(f"config.json has n_inner={n_inner}, not a multiple of n_embd={n_embd}: lmjax's GPT "
                          f"needs an integral mlp_ratio")
    return GPTConfig(vocab_size=hf["vocab_size"], block_size=hf["n_positions"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=n_embd, dropout=0.0, bias=True,
                     tie_embeddings=hf.get("tie_word_embeddings", True), mlp_ratio=n_inner // n_embd,
                     gelu_approximate=_GELU[act], layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5))


def config_to_hf(cfg: GPTConfig) -> dict[str, Any]:
    """The config.json of a GPT2LMHeadModel computing the same function as `cfg`."""
    if not cfg.bias:
        raise ConfigError("HF's GPT-2 always has biases: export a model trained with model.bias=true")
    return {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.vocab_size,
            "n_positions": cfg.block_size, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
            "n_inner": cfg.mlp_ratio * cfg.n_embd,
            "activation_function": "gelu_new" if cfg.gelu_approximate else "gelu",
            "layer_norm_epsilon": cfg.layer_norm_eps, "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
            "attn_pdrop": 0.0, "tie_word_embeddings": cfg.tie_embeddings, "scale_attn_weights": True,
            "bos_token_id": cfg.vocab_size - 1, "eos_token_id": cfg.vocab_size - 1, "dtype": "float32"}


# ---------------------------------------------------------------------------------------------------------- weights


def params_from_hf(state: Mapping[str, np.ndarray], cfg: GPTConfig) -> dict[str, Any]:
    """lmjax GPT parameters (fp32 jnp arrays) from a GPT2Model / GPT2LMHeadModel state dict of NumPy arrays."""
    state = {k.removeprefix("transformer."): np.asarray(v, np.float32) for k, v in state.items()}
    C, H, D = cfg.n_embd, cfg.n_head, cfg.head_dim

    def get(name: str) -> np.ndarray:
        if name not in state:
            raise DataError(f"the checkpoint has no tensor {name!r}: is it a GPT-2 checkpoint of this config "
                            f"({cfg.n_layer} layers)?")
        return state[name]

    def ln(prefix: str) -> dict[str, np.ndarray]:
        return {"scale": get(f"{prefix}.weight"), "bias": get(f"{prefix}.bias")}

    wte = get("wte.weight")
    params: dict[str, Any] = {
        "wte": np.pad(wte, ((0, cfg.padded_vocab_size - wte.shape[0]), (0, 0))),
        "wpe": get("wpe.weight"),
        "ln_f": ln("ln_f"),
    }
    for i in range(cfg.n_layer):
        p = f"h.{i}"
        params[f"h_{i}"] = {
            "ln_1": ln(f"{p}.ln_1"),
            "attn": {"c_attn": {"kernel": get(f"{p}.attn.c_attn.weight").T.reshape(3, H, D, C),
                                "bias": get(f"{p}.attn.c_attn.bias").reshape(3, H, D)},
                     "c_proj": {"kernel": get(f"{p}.attn.c_proj.weight").T.reshape(C, H, D),
                                "bias": get(f"{p}.attn.c_proj.bias")}},
            "ln_2": ln(f"{p}.ln_2"),
            "mlp": {"c_fc": {"kernel": get(f"{p}.mlp.c_fc.weight").T, "bias": get(f"{p}.mlp.c_fc.bias")},
                    "c_proj": {"kernel": get(f"{p}.mlp.c_proj.weight").T, "bias": get(f"{p}.mlp.c_proj.bias")}},
        }
    if not cfg.tie_embeddings:
        head = get("lm_head.weight")
        params["lm_head"] = {"kernel": np.pad(head, ((0, cfg.padded_vocab_size - head.shape[0]), (0, 0)))}
    _check_shapes(params, cfg)
    return jax.tree.map(jnp.asarray, params)


def params_to_hf(params: Mapping[str, Any], cfg: GPTConfig) -> dict[str, np.ndarray]:
    """A GPT2LMHeadModel state dict (fp32 NumPy, contiguous) from lmjax GPT parameters (boxed or not)."""
    params = jax.tree.map(lambda a: np.asarray(a, np.float32), nn.meta.unbox(params))
    C, V = cfg.n_embd, cfg.vocab_size
    out = {"transformer.wte.weight": params["wte"][:V], "transformer.wpe.weight": params["wpe"],
           "transformer.ln_f.weight": params["ln_f"]["scale"], "transformer.ln_f.bias": params["ln_f"]["bias"]}
    for i in range(cfg.n_layer):
        h, p = params[f"h_{i}"], f"transformer.h.{i}"
        attn, mlp = h["attn"], h["mlp"]
        out.update({
            f"{p}.ln_1.weight": h["ln_1"]["scale"], f"{p}.ln_1.bias": h["ln_1"]["bias"],
            f"{p}.attn.c_attn.weight": attn["c_attn"]["kernel"].reshape(3 * C, C).T,
            f"{p}.attn.c_attn.bias": attn["c_attn"]["bias"].reshape(3 * C),
            f"{p}.attn.c_proj.weight": attn["c_proj"]["kernel"].reshape(C, C).T,
            f"{p}.attn.c_proj.bias": attn["c_proj"]["bias"],
            f"{p}.ln_2.weight": h["ln_2"]["scale"], f"{p}.ln_2.bias": h["ln_2"]["bias"],
            f"{p}.mlp.c_fc.weight": mlp["c_fc"]["kernel"].T, f"{p}.mlp.c_fc.bias": mlp["c_fc"]["bias"],
            f"{p}.mlp.c_proj.weight": mlp["c_proj"]["kernel"].T, f"{p}.mlp.c_proj.bias": mlp["c_proj"]["bias"],
        })
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = params["lm_head"]["kernel"][:V]
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _check_shapes(params: Mapping[str, Any], cfg: GPTConfig) -> None:
    """Every tensor has the shape lmjax's GPT of `cfg` expects (a config/weights mismatch is a one-line error)."""
    tokens = jnp.zeros((1, 1), jnp.int32)
    expected = nn.meta.unbox(jax.eval_shape(GPT(cfg).init, jax.random.key(0), tokens))["params"]
    if jax.tree.structure(expected) != jax.tree.structure(params):
        raise DataError("the checkpoint's tensors do not form lmjax's GPT parameter tree: is it a GPT-2 checkpoint?")
    for (path, want), got in zip(jax.tree_util.tree_leaves_with_path(expected), jax.tree_util.tree_leaves(params)):
        if want.shape != got.shape:
            raise DataError(f"checkpoint tensor for {jax.tree_util.keystr(path)} has shape {got.shape}, the config "
                            f"says {want.shape}: config.json does not describe these weights")


# -------------------------------------------------------------------------------------------------------- directory


def _read_state(directory: Path) -> dict[str, np.ndarray]:
    """All tensors of a save_pretrained directory: safetensors (single or sharded) first, else pytorch_model.bin."""
    if (directory / SAFETENSORS).is_file() or (directory / SAFETENSORS_INDEX).is_file():
        from safetensors.numpy import load_file

        if (directory / SAFETENSORS).is_file():
            return load_file(directory / SAFETENSORS)
        shards = sorted(set(json.loads((directory / SAFETENSORS_INDEX).read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(directory / shard).items()}
    if (directory / TORCH_BIN).is_file():
        import torch

        state = torch.load(directory / TORCH_BIN, map_location="cpu", weights_only=True)
        return {k: v.float().numpy() for k, v in state.items()}
    raise DataError(f"{directory} has none of {SAFETENSORS}, {SAFETENSORS_INDEX}, {TORCH_BIN}: point at a directory "
                    f"written by save_pretrained")


def load_hf_gpt2(directory: str | os.PathLike) -> tuple[GPTConfig, dict[str, Any]]:
    """(GPTConfig, params) from a Hugging Face GPT-2 directory (config.json + safetensors or pytorch_model.bin)."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise DataError(f"{directory / 'config.json'} is missing: point at a directory written by save_pretrained")
    cfg = config_from_hf(json.loads((directory / "config.json").read_text()))
    return cfg, params_from_hf(_read_state(directory), cfg)


def save_hf_gpt2(directory: str | os.PathLike, cfg: GPTConfig, params: Mapping[str, Any], *,
                 safe_serialization: bool = True) -> Path:
    """Write config.json and model.safetensors (or pytorch_model.bin) that `GPT2LMHeadModel.from_pretrained` loads.

    The tied output projection is not written (HF ties it on load), as save_pretrained does."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = params_to_hf(params, cfg)
    (directory / "config.json").write_text(json.dumps(config_to_hf(cfg), indent=2) + "\n")
    if safe_serialization:
        from safetensors.numpy import save_file

        save_file(state, directory / SAFETENSORS, metadata={"format": "pt"})
    else:
        import torch

        torch.save({k: torch.tensor(v) for k, v in state.items()}, directory / TORCH_BIN)
    return directory


def load_hf_gpt2_tokenizer(directory: str | os.PathLike) -> BPETokenizer:
    """GPT-2's byte-level BPE from the `vocab.json` and `merges.txt` of a checkpoint directory."""
    directory = Path(directory)
    return BPETokenizer.from_files(directory / "vocab.json", directory / "merges.txt")
