"""Train the toy model with the real loop (checkpoints every 10 steps, a loss logged every step).

usage: resume_worker.py WORKDIR STEPS [DELAY_S] [DATA_DEVICES] [STOP_AFTER]
DELAY_S slows each batch so a test can SIGKILL the process mid-run; the run resumes from WORKDIR's latest checkpoint.
SIGINT/SIGTERM stop the run with a checkpoint of the last completed step: the worker prints the one line and exits
128 + the signal number, as `lmjax train` does.
"""

import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, __file__.rsplit("/", 2)[0] + "/train")
import toy  # noqa: E402

from lmjax.config import MeshConfig, get_preset  # noqa: E402
from lmjax.train.engine import Engine  # noqa: E402
from lmjax.train.interrupt import Interrupted  # noqa: E402
from lmjax.train.loop import train  # noqa: E402

workdir, steps = sys.argv[1], int(sys.argv[2])
delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
data_devices = int(sys.argv[4]) if len(sys.argv) > 4 else -1
stop_after = int(sys.argv[5]) if len(sys.argv) > 5 else None
preset = os.environ.get("RESUME_PRESET", "")  # e.g. tbptt_smoke: a task that carries state across batches
if preset:
    cfg = get_preset(preset, [f"train.steps={steps}", "train.log_every=1", "train.checkpoint_every=10",
                              "train.eval_every=20", f"train.workdir={workdir}", "train.keep_checkpoints=2",
                              "train.steps_per_call=1", "train.progress=false", "train.tensorboard=false",
                              "train.plot=false"])
else:
    cfg = toy.toy_config(steps=steps, log_every=1, checkpoint_every=10, eval_every=20, workdir=workdir,
                         keep_checkpoints=2)
cfg = dataclasses.replace(cfg, mesh=MeshConfig(data=data_devices))


class Slow:
    """Sleeps before each batch, so that a SIGKILL lands mid-run."""

    def __init__(self, it):
        self.it = it

    def __next__(self):
        time.sleep(delay)
        return next(self.it)

    def state(self):
        return self.it.state()

    def restore(self, state):
        self.it.restore(state)


if delay and not preset:
    make_data = toy.make_data

    def slow_data(c, tokenizer=None):
        data = make_data(c, tokenizer)
        return dataclasses.replace(data, train=lambda pi, pc: Slow(data.train(pi, pc)))

    toy.make_data = slow_data
engine = None
if preset:
    engine = Engine(cfg)
    if delay:
        data = engine.data
        engine.data = dataclasses.replace(data, train=lambda pi, pc: Slow(data.train(pi, pc)))
try:
    result = train(cfg, engine=engine, stop_after=stop_after)
except Interrupted as e:
    print(e.message(), file=sys.stderr)
    sys.exit(e.exit_code)
print(json.dumps(result.summary()))
