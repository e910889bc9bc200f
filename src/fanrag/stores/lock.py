"""One writer process per index home: an ``fcntl.flock`` on ``home/LOCK``.

The lock file holds the writer's pid, so a second writer is told who holds it. The kernel drops the lock
when the process exits, however it exits, so a crashed writer never leaves a home locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import IndexLocked


class WriterLock:
    """``fcntl.flock`` on ``home/LOCK``: one writer process per home. Released by release() or process exit."""

    def __init__(self, home: Path) -> None:
        self.path = home / "LOCK"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise IndexLocked(f"{home} is being written by another process (pid {holder}); wait for it to "
                              "finish, or open it read-only to query") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1
