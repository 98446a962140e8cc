"""Exclusive ownership of a folder by one process: an advisory `flock` on a lock file.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, a pre-empted node),
so a lock file left behind by a killed process is stale by construction: the next taker gets
it at once. The file's text says who holds it (pid, host, since when), for the message a second
launch prints. Locks need a filesystem with working `flock` (local disks; NFSv4 emulates it).
"""

import fcntl
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path


@contextmanager
def exclusive(path: Path, wait: bool) -> Iterator[str | None]:
    """Hold the lock on `path` for the block. Yields None when it is held (after waiting for it
    when `wait`), or, when `wait` is False and another process holds it, that holder's
    description, without the lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield _holder(path)
            return
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {platform.node()} since {since}\n".encode(), 0)
        try:
            yield None
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        text = ""
    return text or "another process"
