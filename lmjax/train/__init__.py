"""The engine every model family trains on: optimizer, sharded state, compiled steps, loop, checkpoints, metrics."""

__all__ = ["Data", "Task"]


def __getattr__(name: str):
    """`Data` and `Task` on first use: importing a light submodule (`lmjax.train.interrupt`, which the CLI installs
    before anything else) must not import JAX."""
    if name in __all__:
        from lmjax.train import task

        return getattr(task, name)
    raise AttributeError(f"module 'lmjax.train' has no attribute {name!r}")
