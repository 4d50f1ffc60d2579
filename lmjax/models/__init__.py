"""Model families, one file each: a Flax Linen module built on `lmjax.ops`, its config dataclass, its engine `Task`
(`make_task(run_cfg, vocab_size)`) and its presets (`@register_preset`). Import a family directly, e.g.
`from lmjax.models import gpt`; this package imports none of them, so loading one never pays for the others.
"""
