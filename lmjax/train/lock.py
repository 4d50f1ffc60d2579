"""One writer per run directory: an exclusive `fcntl.flock` on `<workdir>/.lock`.

    with WorkdirLock(workdir):     # raises LockError at once if another live process holds it
        train(...)

The file holds `{"pid", "host", "started"}` of the holder, for the error message. The kernel releases a flock when
its process dies (SIGKILL included), so a lock left by a killed run is free: the next run takes it over and rewrites
the file. A leftover `.lock` file without a live holder is therefore never an obstacle.

Deleting the file on release would race with a process that opened it just before (it would lock a deleted inode
while a third process creates and locks a new file), so acquiring checks that the locked file is still the one at
the path, and release leaves the file in place, emptied.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket

__all__ = ["LockError", "WorkdirLock"]

LOCK_FILE = ".lock"


class LockError(RuntimeError):
    """Another process holds the run directory; the message names it and the fix."""


class WorkdirLock:
    def __init__(self, workdir, *, enabled: bool = True):
        self.path = pathlib.Path(workdir).expanduser().absolute() / LOCK_FILE
        self.enabled = enabled
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        if not self.enabled or self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                raise LockError(f"{self.path.parent} is in use by {self.holder()}: wait for that run to finish or "
                                "stop it, or set train.workdir to another directory") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the file was replaced between open and flock: lock the new one
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def holder(self) -> str:
        """Who holds the lock, as far as the file says."""
        try:
            info = json.loads(self.path.read_text())
            return f"process {info['pid']} on {info['host']} (started {info['started']})"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
