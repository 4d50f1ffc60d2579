"""One process of a `jax.distributed` job on localhost (or a lone process): 3 toy train steps, losses as JSON.

Joined through lmjax's own start-up path (`LMJAX_COORDINATOR`, `LMJAX_NUM_PROCESSES`, `LMJAX_PROCESS_ID`).
"""

import dataclasses
import json
import sys

import jax
import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/train")
from toy import toy_config  # noqa: E402

from lmjax.parallel import maybe_initialize  # noqa: E402
from lmjax.train.engine import Engine  # noqa: E402

maybe_initialize()
cfg = toy_config()
cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dropout=0.0))
engine = Engine(cfg)
state = engine.init_state()
it = engine.data.train(jax.process_index(), jax.process_count())
losses = []
for _ in range(3):
    state, m = engine.train_steps(state, engine.stack_batches(it, 1))
    losses.append(float(np.asarray(m["loss"])[0]))
ev = engine.evaluate(state.params)
print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(), "devices": jax.device_count(),
                  "losses": losses, "eval_loss": ev["eval_loss"]}))
