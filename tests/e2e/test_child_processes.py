"""Pool workers started with ``die_with_parent`` end with their parent, however it ends, in a real
parent process that the test kills (the Prefect server and the render workers of a real
``novaflow run`` are in test_crash_safety.py). Children are found by the process tree."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the kernel's parent-death signal")

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 180.0  # Prefect's temporary server takes 5-15 s to start on 2 loaded cores
GONE_TIMEOUT_S = 10.0

POOL_PARENT = textwrap.dedent(
    """
    import functools, multiprocessing, os, sys, threading
    from concurrent.futures import ProcessPoolExecutor
    from tasks.child_lifetime import die_with_parent

    def worker_pids(pool):
        # Each submit finds no idle worker yet and starts one: two workers run after this.
        submitted = [pool.submit(os.getpid) for _ in range(2)]
        return sorted(future.result() for future in submitted)

    if __name__ == "__main__":
        start_method, watch, spawned_by = sys.argv[1:]
        initializer = functools.partial(die_with_parent, parent_thread_signal=watch == "kernel")
        context = multiprocessing.get_context(start_method)
        pool = ProcessPoolExecutor(2, mp_context=context, initializer=initializer)
        if spawned_by == "ended-thread":  # as a renderer borrowed after its flow run ended
            spawn = lambda: print("spawned", *worker_pids(pool), flush=True)
            spawner = threading.Thread(target=spawn)
            spawner.start()
            spawner.join()
        print("workers", *worker_pids(pool), flush=True)
        print("ready", flush=True)
        threading.Event().wait()
    """
)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_alive_after(pids: list[int], timeout_s: float) -> list[int]:
    """The ``pids`` still running once all have ended or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while (running := [pid for pid in pids if alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    return running


@pytest.fixture
def started() -> Iterator[list[tuple[subprocess.Popen[str], list[int]]]]:
    """Parent processes the test starts, with their descendants once ready; whichever of them
    still run after the test are killed."""
    parents: list[tuple[subprocess.Popen[str], list[int]]] = []
    yield parents
    for parent, descendants in parents:
        if parent.poll() is None:
            parent.kill()
        parent.wait(timeout=30)
        for pid in descendants:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def start_parent(
    started: list[tuple[subprocess.Popen[str], list[int]]],
    script: str,
    args: list[str],
    env: dict[str, str],
) -> tuple[subprocess.Popen[str], list[int], list[str]]:
    """Run ``script`` in a new Python until it prints ``ready``; return it, its descendants
    (the process tree below it) at that moment, and the lines it printed before."""
    parent = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    descendants: list[int] = []
    started.append((parent, descendants))
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert parent.stdout is not None
        for line in parent.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    printed: list[str] = []
    while (line := lines.get(timeout=READY_TIMEOUT_S)) != "ready":
        assert line is not None, f"the parent ended before it was ready: {printed}"
        printed.append(line)
    descendants += [child.pid for child in psutil.Process(parent.pid).children(recursive=True)]
    return parent, descendants, printed


@pytest.mark.parametrize(
    ("start_method", "watch", "spawned_by"),
    [
        ("spawn", "sentinel", "main"),
        ("spawn", "sentinel", "ended-thread"),
        ("forkserver", "sentinel", "main"),
        ("fork", "sentinel", "main"),
        ("spawn", "kernel", "main"),
        ("fork", "kernel", "main"),
    ],
)
def test_pool_workers_end_within_seconds_of_their_parents_sigkill(
    started: list[tuple[subprocess.Popen[str], list[int]]],
    start_method: str,
    watch: str,
    spawned_by: str,
    tmp_path: Path,
) -> None:
    args = [start_method, watch, spawned_by]
    # The killed parent cannot remove the directory multiprocessing made for the fork server's
    # socket (pymp-*): it goes in the test's own.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    parent, descendants, _ = start_parent(started, POOL_PARENT, args, env)
    assert len(descendants) >= 2  # the two workers, and the helpers of the start method

    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)

    # The workers die with their parent; then the resource tracker and the fork server see
    # their last client gone, and end too.
    assert still_alive_after(descendants, GONE_TIMEOUT_S) == []


def test_workers_outlive_the_thread_that_spawned_them_while_their_process_lives(
    started: list[tuple[subprocess.Popen[str], list[int]]],
) -> None:
    args = ["spawn", "sentinel", "ended-thread"]
    _, _, printed = start_parent(started, POOL_PARENT, args, dict(os.environ))

    # The main thread's tasks ran (the pool is not broken), and the ended thread's workers live.
    spawned, used = ([int(pid) for pid in line.split()[1:]] for line in printed)
    assert used
    assert all(alive(pid) for pid in spawned)
