"""Child processes that end when novaflow ends, however it ends.

novaflow starts two kinds of long-lived children: the PDF render workers (a
``ProcessPoolExecutor`` with the ``spawn`` start method) and, when no ``PREFECT_API_URL`` is set,
Prefect's temporary API server (``python -m uvicorn``, started by ``flows.prefect_server`` as
Prefect's ``SubprocessASGIServer`` would, and stopped by an ``atexit`` hook). Neither
notices its parent's death by itself: a pool worker blocks on a queue whose write end it holds
itself, and the server serves on. Three ways out of novaflow, and what ends the children in each:

- a normal exit or an exception: the pools' ``close`` and the server's ``atexit`` hook;
- SIGTERM or SIGHUP: by default these end the process without running either, so
  :func:`exit_on_termination_signals` turns the first one into ``SystemExit`` (a second one
  still ends the process at once);
- SIGKILL, or a crash: nothing runs in novaflow, so the children must notice. A pool worker
  watches multiprocessing's parent sentinel (:func:`die_with_parent`, as its initializer); the
  server gets the kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG)``, Linux) from a
  ``preexec_fn`` that Popen runs in the child before it executes uvicorn
  (:func:`popen_dying_with_this_process`).

The kernel's "parent" is the *thread* that started the child: the signal comes when that thread
ends, though the process lives on. The server is tied only when the main thread starts it (it
does: the command starts it before its first flow run). Pool workers are
not tied that way by default: a renderer's pool is spawned by the Prefect task thread that first
submits to it, and is borrowed by other shards' threads, and by later flow runs in the same
process, long after that thread has ended with its flow run's task runner.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import types
from typing import Any

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def die_with_parent(signum: int = signal.SIGKILL, *, parent_thread_signal: bool = False) -> None:
    """End this pool worker with ``signum`` when the process that started it ends, however it
    ends. Use it as (or in) a ``ProcessPoolExecutor`` or ``multiprocessing.Pool`` initializer.

    A daemon thread waits on multiprocessing's parent sentinel, a pipe that only the creating
    process holds open: it works under every start method and on every platform, whichever of
    the parent's threads started the worker, as soon as the worker gets the GIL back (a page
    being rasterised finishes first). A parent that died before this call is noticed at once.

    With ``parent_thread_signal`` the kernel also sends ``signum`` when the worker's parent
    *thread* ends (Linux): at once, even in C code that holds the GIL, but only for a pool used
    only while the thread that spawned its workers lives, and not under ``forkserver`` (whose
    server is the parent, and lives as long as any worker holds its liveness pipe).
    """
    if parent_thread_signal and sys.platform == "linux":
        _prctl_parent_death_signal(signum)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(
            target=_kill_self_after, args=(parent, signum), name="die-with-parent", daemon=True
        ).start()


def exit_on_termination_signals() -> None:
    """Make the first SIGTERM or SIGHUP raise ``SystemExit(128 + signal)`` in the main thread,
    so that ``with`` blocks, ``finally`` clauses and ``atexit`` hooks (Prefect's own stop of its
    temporary server among them) run; a second one ends the process at once, as by default.

    Signals whose handler is not the default (ignored under ``nohup``, or installed by the
    application) are left alone; called from another thread (where Python cannot install
    handlers), it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _TERMINATION_SIGNALS:
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _exit_on_signal)


def bind_children_to_this_process(*modules: types.ModuleType) -> None:
    """End this process's children with it, however it ends: install
    :func:`exit_on_termination_signals`, and have every ``subprocess.Popen`` call made by
    ``modules`` (say ``prefect.server.api.server``, which starts Prefect's temporary API server)
    from the main thread start a child that gets SIGKILL when this process dies (Linux).

    Each module must use ``subprocess`` through its global ``subprocess``; that global is
    replaced by a copy of the module whose ``Popen`` adds the parent-death signal. Idempotent.
    """
    exit_on_termination_signals()
    for module in modules:
        current = getattr(module, "subprocess", None)
        if current is _SUBPROCESS_DYING_WITH_THIS_PROCESS:
            continue
        if current is not subprocess:
            raise TypeError(f"{module.__name__} does not use subprocess as a module global")
        module.subprocess = _SUBPROCESS_DYING_WITH_THIS_PROCESS  # type: ignore[attr-defined]


def popen_dying_with_this_process(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(*args, **kwargs)``, whose child gets SIGKILL when this process dies
    (Linux), if called from the main thread; from another thread, or given its own
    ``preexec_fn``, exactly ``subprocess.Popen`` (with a warning for the thread)."""
    if sys.platform == "linux" and "preexec_fn" not in kwargs:
        if threading.current_thread() is threading.main_thread():
            kwargs["preexec_fn"] = functools.partial(
                _die_with_parent_in_child, os.getpid(), _prctl_function()
            )
        else:
            logger.warning(
                "%s started from thread %s: not tied to this process, because the end of that "
                "thread would kill it",
                args[0] if args else kwargs.get("args"),
                threading.current_thread().name,
            )
    return subprocess.Popen(*args, **kwargs)


def _kill_self_after(parent: multiprocessing.process.BaseProcess, signum: int) -> None:
    parent.join()  # returns when the parent's end of the sentinel pipe closes
    os.kill(os.getpid(), signum)


def _exit_on_signal(signum: int, frame: types.FrameType | None) -> None:
    signal.signal(signum, signal.SIG_DFL)
    raise SystemExit(128 + signum)


def _die_with_parent_in_child(parent_pid: int, prctl: Any) -> None:
    # Runs in the child between fork and exec, where a lock held by another thread of the
    # parent at the fork stays held forever: no logging, no import, no allocation-heavy work;
    # the prctl function was looked up in the parent.
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)  # the parent died before the prctl took effect


@functools.cache
def _prctl_function() -> Any:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
    prctl.restype = ctypes.c_int
    return prctl


def _prctl_parent_death_signal(signum: int) -> None:
    if _prctl_function()(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"prctl(PR_SET_PDEATHSIG): {os.strerror(error)}")


def _subprocess_dying_with_this_process() -> types.ModuleType:
    copy = types.ModuleType("subprocess", subprocess.__doc__)
    copy.__dict__.update(vars(subprocess))
    copy.Popen = popen_dying_with_this_process  # type: ignore[attr-defined]
    return copy


_SUBPROCESS_DYING_WITH_THIS_PROCESS = _subprocess_dying_with_this_process()
