"""Graceful stops on SIGINT (Ctrl-C) and SIGTERM (what a preempted cloud VM or a job scheduler sends).

    with interrupt.signals(exit_at_once=True) as stop:   # the CLI, first thing, before JAX is imported
        ...                                   # start-up: a signal ends the process at once (nothing to save yet)
        stop.defer()                          # the training loop: from here a signal only sets a flag ...
        while training:
            state = compiled_call(state)
            if stop.requested:                # ... which the loop checks after each compiled call, saves the last
                ...                           # completed step, waits for the asynchronous save and raises
                raise stop.interrupted(step=step, saved_in=checkpoint_dir)

Contract:
- Start-up (before `defer()`), with `exit_at_once=True` (the CLI): the handler prints the one line and ends the
  process with `os._exit(128 + signal)`. An exception raised from a handler can land anywhere - inside an import
  (which NumPy and jaxlib turn into ImportError tracebacks), or inside a gc callback, where Python reports and
  ignores it and the run goes on - so none is raised; nothing is being saved before the loop. Without it (library
  use) the handler raises `Interrupted`, as Python raises KeyboardInterrupt; should that be lost, the flag stays
  set and the next `defer()` raises it.
- Deferred (the loop): a signal sets `requested`; the current compiled call finishes, the loop saves and raises. A
  second signal ends the process at once (a save cut short is an uncommitted temporary directory: the last
  committed checkpoint stays the latest good one).
- `Interrupted` derives from KeyboardInterrupt (a BaseException), so `except Exception` in library code - such as
  the checkpoint fallback - never mistakes it for a failure. Its `exit_code` is 128 + signal number (130 for SIGINT,
  143 for SIGTERM), the shell's convention.
- Nested `signals()` blocks share one handler; leaving the outermost restores the handlers that were there before.
  A signal that was set to be ignored when the block starts (a shell's background job ignores SIGINT) stays so.
  Outside the main thread (where Python cannot install handlers) `signals()` gives an inert flag that never fires.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading

__all__ = ["Interrupted", "Stop", "signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A run stopped by a signal. `step` is the step a checkpoint was saved for (None when none was written)."""

    def __init__(self, signum: int, *, step: int | None = None, saved_in=None, during: str | None = None):
        self.signum, self.step, self.saved_in, self.during = signum, step, saved_in, during
        super().__init__(self.message())

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def message(self) -> str:
        """One line: what happened, what was kept, how to go on."""
        if self.step is not None:
            return (f"interrupted by {self.signal_name} at step {self.step}: saved a checkpoint of step {self.step} "
                    f"in {self.saved_in}; run the same command to resume")
        during = f" {self.during}" if self.during else ""
        return f"interrupted by {self.signal_name}{during}: nothing was saved; run the same command again"


class Stop:
    """The flag a signal sets, and how the handler reacts to it (see the module docstring)."""

    def __init__(self, active: bool = True, exit_at_once: bool = False):
        self.active = active  # False: an inert flag (not the main thread)
        self.exit_at_once = exit_at_once
        self.signum: int | None = None
        self.deferring = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def defer(self) -> Stop:
        """From now on a signal only sets the flag. Raises at once for a signal that arrived before and was lost."""
        if self.requested:
            raise Interrupted(self.signum)
        self.deferring = True
        return self

    def interrupted(self, **kwargs) -> Interrupted:
        """The exception to raise for the pending signal (`step=..., saved_in=...` once a checkpoint is saved)."""
        return Interrupted(self.signum if self.signum is not None else signal.SIGINT, **kwargs)

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        self.signum = signum
        if self.deferring and first:
            return  # the loop finishes its compiled call, saves and raises
        if self.deferring:
            _exit(signum, f"interrupted by {signal.Signals(signum).name} again: stopped without saving the current "
                          "step; run the same command to resume from the last saved checkpoint")
        if self.exit_at_once or not first:  # not first: the exception raised for the first one was lost
            _exit(signum, Interrupted(signum).message())
        raise Interrupted(signum)


def _exit(signum: int, message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    os._exit(128 + signum)


_current: Stop | None = None


@contextlib.contextmanager
def signals(*, exit_at_once: bool = False):
    """Install SIGINT/SIGTERM handlers for the block (re-entrant: an inner block shares the outer one's handler and
    its `exit_at_once`); yields the `Stop` they set."""
    global _current
    if threading.current_thread() is not threading.main_thread():
        yield _current if _current is not None else Stop(active=False)
        return
    if _current is not None:  # nested: share the outer handler; restore its mode afterwards
        outer, deferring = _current, _current.deferring
        try:
            yield outer
        finally:
            outer.deferring = deferring
        return
    stop = _current = Stop(exit_at_once=exit_at_once)
    # A signal the parent set to be ignored stays ignored (a shell's background job ignores SIGINT), as Python does.
    previous = {s: signal.signal(s, stop._handle) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _current = None
