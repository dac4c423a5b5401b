"""Watching a run from the terminal while it works: a callback repeated on a background thread
for as long as a ``with`` block runs (the run's checkpoints are what it reads)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def repeated_while_running(callback: Callable[[], None], seconds: float) -> Iterator[None]:
    """Call ``callback`` every ``seconds`` on a daemon thread while the block runs, and once
    more when it ends (so the last change is shown)."""
    stop = threading.Event()

    def repeat() -> None:
        while not stop.wait(seconds):
            callback()

    watcher = threading.Thread(target=repeat, name="novaflow-watch", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        callback()
