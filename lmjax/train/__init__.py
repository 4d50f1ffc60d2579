"""The engine every model family trains on: optimizer, sharded state, compiled steps, loop, checkpoints, metrics."""

from lmjax.train.task import Data, Task

__all__ = ["Data", "Task"]
