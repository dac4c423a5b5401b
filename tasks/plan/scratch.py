"""The plan's local scratch directory, and the removal of those whose process was killed.

A plan spills its corpus to a temporary directory that is removed when the plan ends, however
it ends, except by SIGKILL or a machine's crash, which leave it behind. Each scratch directory
holds an ``flock`` on a file inside it for as long as its process lives (the kernel drops it
when the process dies, however it dies, whatever its PID namespace), so the next plan on the
machine tells an abandoned directory from a live one and removes it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

SCRATCH_PREFIX = "novaflow-plan-"
LOCK_NAME = ".held"
UNLOCKED_GRACE_SECONDS = 3600.0
"""Age after which a scratch directory with no lock file is taken as abandoned: one made by a
novaflow that did not lock its scratch, or one caught between its creation and its lock."""


@contextmanager
def plan_scratch(parent: str | None = None) -> Iterator[str]:
    """A new scratch directory under ``parent`` (default: the system's temporary directory),
    held for the life of the block and removed after it; abandoned ones are removed first."""
    removed_abandoned_scratch(parent)
    with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=parent) as scratch:
        # Locked under another name, then renamed: a sweep never sees the lock file unlocked.
        unlocked = os.path.join(scratch, LOCK_NAME + ".new")
        descriptor = os.open(unlocked, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            os.replace(unlocked, os.path.join(scratch, LOCK_NAME))
            yield scratch
        finally:
            os.close(descriptor)  # closing releases the flock


def removed_abandoned_scratch(parent: str | None = None, now: float | None = None) -> list[str]:
    """Remove the scratch directories under ``parent`` whose process is gone; returns them."""
    root = parent or tempfile.gettempdir()
    removed: list[str] = []
    with os.scandir(root) as entries:
        candidates = [
            entry.path
            for entry in entries
            if entry.name.startswith(SCRATCH_PREFIX) and entry.is_dir(follow_symlinks=False)
        ]
    for path in candidates:
        if _abandoned(path, time.time() if now is None else now):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _abandoned(path: str, now: float) -> bool:
    try:
        descriptor = os.open(os.path.join(path, LOCK_NAME), os.O_RDWR)
    except FileNotFoundError:
        try:
            return now - os.stat(path).st_mtime > UNLOCKED_GRACE_SECONDS
        except OSError:
            return False
    except OSError:
        return False  # another user's, or gone: not ours to judge
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # its process holds it: alive
    finally:
        os.close(descriptor)
    return True
