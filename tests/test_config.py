"""Config validation: every setting checked when the config is built, one line naming the key and what it allows."""

from __future__ import annotations

import dataclasses

import pytest

from lmjax.config import ConfigError, get_preset, list_presets, validate


def rejected(preset: str, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        get_preset(preset, overrides)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_every_preset_is_valid():
    for name in list_presets():
        assert validate(get_preset(name)).name == name


@pytest.mark.parametrize("override, fragment", [
    ("data.batch_size=0", "data.batch_size=0 is invalid: it must be >= 1"),
    ("data.batch_size=-4", "data.batch_size=-4 is invalid: it must be >= 1"),
    ("data.seq_len=0", "data.seq_len=0 is invalid: it must be >= 1"),
    ("data.eval_batch_size=-1", "data.eval_batch_size=-1 is invalid: it must be >= 0 (0 = data.batch_size)"),
    ("data.tokenizer=bytes", "data.tokenizer='bytes' is invalid: it must be one of char, word, wordpiece, bpe"),
    ("data.seed=-1", "data.seed=-1"),
    ("optim.lr=-1", "optim.lr=-1.0 is invalid: it must be > 0"),
    ("optim.lr=0", "optim.lr=0.0 is invalid: it must be > 0"),
    ("optim.end_lr=-0.1", "optim.end_lr=-0.1 is invalid: it must be >= 0"),
    ("optim.b1=1", "optim.b1=1.0 is invalid: it must be in [0, 1)"),
    ("optim.b2=-0.5", "optim.b2=-0.5 is invalid: it must be in [0, 1)"),
    ("optim.eps=0", "optim.eps=0.0 is invalid: it must be > 0"),
    ("optim.momentum=1.2", "optim.momentum=1.2"),
    ("optim.grad_accum=0", "optim.grad_accum=0 is invalid: it must be >= 1"),
    ("optim.name=lion", "optim.name='lion' is invalid: it must be one of adamw, sgd, adagrad"),
    ("optim.schedule=exp", "optim.schedule='exp' is invalid: it must be one of cosine"),
    ("optim.decay_mask=none", "optim.decay_mask='none'"),
    ("optim.lr=nan", "optim.lr=nan must be a finite number"),
    ("optim.clip_norm=inf", "optim.clip_norm=inf must be a finite number"),
    ("optim.freeze=[", "optim.freeze pattern '[' is not a valid regex"),
    ("mesh.data=0", "mesh.data=0 is invalid: it must be >= 1, or -1"),
    ("mesh.tensor=0", "mesh.tensor=0 is invalid: it must be >= 1"),
    ("train.steps=0", "train.steps=0 is invalid: it must be >= 1"),
    ("train.eval_every=-1", "train.eval_every=-1 is invalid: it must be >= 0 (0 = off)"),
    ("train.eval_batches=-1", "train.eval_batches=-1 is invalid: it must be >= 0 (0 = the whole split)"),
    ("train.log_every=0", "train.log_every=0 is invalid: it must be >= 1"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints=0 is invalid: it must be >= 1"),
    ("train.steps_per_call=0", "train.steps_per_call=0 is invalid: it must be >= 1"),
    ("train.dtype=float16", "train.dtype='float16' is invalid: it must be one of float32, bfloat16"),
    ("train.best_mode=lowest", "train.best_mode='lowest' is invalid: it must be one of min, max, auto"),
    ("model.dropout=1.5", "model.dropout=1.5 is invalid: it must be in [0, 1)"),
    ("model.dropout=-0.1", "model.dropout=-0.1 is invalid: it must be in [0, 1)"),
    ("model.n_layer=0", "model.n_layer=0 is invalid: it must be >= 1"),
    ("model.n_embd=31", "model.n_embd=31 is invalid: it must be a positive multiple of model.n_head=2"),
    ("model.attention=flash", "model.attention='flash' is invalid: it must be one of auto, xla, jax"),
])
def test_a_bad_setting_is_one_line_naming_key_and_range(override, fragment):
    assert fragment in rejected("gpt_smoke", override)


def test_zero_turns_intervals_off_and_the_step_schedule_needs_its_interval():
    cfg = get_preset("gpt_smoke", ["train.eval_every=0", "train.checkpoint_every=0", "train.eval_batches=0",
                                   "train.sample_tokens=0", "optim.warmup_steps=0", "optim.clip_norm=0"])
    assert cfg.train.eval_every == 0 and cfg.optim.clip_norm == 0
    assert "optim.decay_every=0 must be >= 1 with optim.schedule=step" in rejected("gpt_smoke", "optim.schedule=step")
    assert get_preset("gpt_smoke", ["optim.schedule=step", "optim.decay_every=5"]).optim.decay_every == 5


def test_validation_sees_the_settings_together():
    """Overrides apply in order and are checked once at the end: a later one may fix an earlier one's value."""
    assert get_preset("gpt_smoke", ["optim.schedule=step", "optim.decay_every=10"]).optim.schedule == "step"


@pytest.mark.parametrize("preset, override, fragment", [
    ("nnlm_smoke", "model.word_dropout=1", "model.word_dropout=1.0 is invalid: it must be in [0, 1)"),
    ("nnlm_smoke", "model.context=0", "model.context=0 is invalid: it must be >= 1"),
    ("rnn_smoke", "model.cell=tree", "model.cell='tree' is invalid: it must be one of lstm, gru"),
    ("rnn_smoke", "model.init_scale=0", "model.init_scale=0.0 is invalid: it must be > 0"),
])
def test_each_family_checks_its_model_section(preset, override, fragment):
    if preset not in list_presets():
        pytest.skip(f"no preset {preset}")
    assert fragment in rejected(preset, override)


def test_training_validates_a_config_built_in_code(tmp_path):
    from lmjax.train.loop import train

    cfg = get_preset("gpt_smoke", [f"train.workdir={tmp_path}"])
    bad = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=0))
    with pytest.raises(ConfigError, match="data.batch_size=0 is invalid"):
        train(bad)
    assert not any(tmp_path.iterdir())  # rejected before anything was written
