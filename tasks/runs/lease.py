"""A run lease: at most one live novaflow process runs a given run id; and an index lease, the
same kind of lease held by the run writing an index, so that one run at a time writes it.

The lease is one small JSON file, ``<store>/runs/<run_id>/lease.json``, naming its holder (a
random id per process and run, with host and pid) and when it started, was last renewed and
expires. Every change is a compare-and-swap against the version its writer last read, so two
processes never both hold it:

- in a local directory the file is created with ``O_CREAT | O_EXCL``, and replaced
  (``os.replace``) or deleted only under an ``flock`` on a sidecar ``lease.json.lock``, after
  re-reading the file and checking its version (a digest of its bytes);
- on S3, with conditional requests: ``PutObject`` with ``If-None-Match: *`` creates it,
  ``PutObject``/``DeleteObject`` with ``If-Match: <ETag>`` renew, take over or release it.

A holder renews its lease every ``ttl/3`` (:func:`held_lease`). A lease whose holder stopped
renewing it (killed, frozen, cut off) is taken over once expired, and the takeover is logged.
Expiry compares this host's clock with the holder's: hosts sharing a store should keep their
clocks within a few seconds of each other (NTP does).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from tasks.runs.slots import lease_slot_at
from tasks.store import CheckpointStore

logger = logging.getLogger(__name__)

LEASE_FILE = "lease.json"
DEFAULT_TTL_SECONDS = 60.0
# Compare-and-swap rounds before giving up: each lost round means another process changed the
# lease in between, which only a handful of racing processes can do.
_CAS_ATTEMPTS = 5
# S3's answers to a conditional request that lost to another writer.
_TIMES = ("started_at", "renewed_at", "expires_at")

Clock = Callable[[], float]
# Waits up to the given seconds or until the event is set; returns whether it was set.
Pause = Callable[[threading.Event, float], bool]


def lease_location(store: CheckpointStore, run_id: str) -> str:
    """Where a run's lease lives: a local path, or ``s3://bucket/key`` for an S3 store."""
    return store.uri(store.lease_path(run_id))


def index_lease_location(store: CheckpointStore, vector_bucket: str, index: str) -> str:
    """Where the lease of the run writing an index lives (see :func:`held_lease`'s
    ``subject``): one run at a time plans against, loads and commits an index's state."""
    return store.uri(store.index_lease_path(vector_bucket, index))


@dataclass(frozen=True)
class LeaseRecord:
    """What a lease file says: who holds the run, and until when.

    ``holder`` is unique to one process's claim on one run; times are seconds since the epoch
    (ISO 8601 UTC in the file). The holder is live while ``now <= expires_at``.
    """

    run_id: str
    holder: str
    host: str
    pid: int
    started_at: float
    renewed_at: float
    expires_at: float

    def expired(self, now: float) -> bool:
        """Whether the holder has stopped renewing it: nobody runs the run under this lease."""
        return now > self.expires_at

    def describe(self, now: float) -> str:
        """``host h pid 1 since <time> (lease renewed 12 s ago, expires in 48 s)``."""
        left = self.expires_at - now
        expiry = f"expired {-left:.0f} s ago" if left < 0 else f"expires in {left:.0f} s"
        return (
            f"host {self.host} pid {self.pid} since {_iso(self.started_at, 'seconds')} "
            f"(lease renewed {now - self.renewed_at:.0f} s ago, {expiry})"
        )

    def to_json(self) -> bytes:
        """The lease file's content."""
        document = asdict(self) | {name: _iso(getattr(self, name)) for name in _TIMES}
        return json.dumps(document, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LeaseRecord:
        """The record in a lease file; ``ValueError`` if it is not one (torn, or foreign)."""
        try:
            document = json.loads(data)
            times = {name: datetime.fromisoformat(document[name]).timestamp() for name in _TIMES}
            return cls(
                **times,
                run_id=str(document["run_id"]),
                holder=str(document["holder"]),
                host=str(document["host"]),
                pid=int(document["pid"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a lease file: {err!r}") from err


class LeaseError(Exception):
    """The lease could not be acquired, renewed or released."""


class LeaseHeldError(LeaseError):
    """Another live process holds the lease; ``holder`` says who, the message too: the run it
    runs, or (``subject``, say ``index b/i``) what that run is writing."""

    def __init__(self, holder: LeaseRecord, now: float, subject: str | None = None) -> None:
        held = (
            f"run {holder.run_id} is being run by {holder.describe(now)}"
            if subject is None
            else f"{subject} is being written by run {holder.run_id}, {holder.describe(now)}"
        )
        super().__init__(f"{held}; wait for it to end, or stop it")
        self.holder = holder


class LeaseLostError(LeaseError):
    """This process no longer holds the lease: it expired and ``by`` took it over, or it was
    deleted (``by`` is None). Whoever holds it now runs the run; this process should stop."""

    def __init__(self, run_id: str, by: LeaseRecord | None, now: float) -> None:
        taker = f"taken over by {by.describe(now)}" if by is not None else "deleted"
        super().__init__(f"run {run_id}: this process lost its lease, {taker}")
        self.by = by


class RunLease:
    """This process's claim on one run's lease at ``location`` (see :func:`lease_location`).

    Thread-safe: a renewing thread and the caller may use it at once.
    """

    def __init__(
        self,
        location: str,
        run_id: str,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Clock = time.time,
        s3: BaseClient | None = None,
        subject: str | None = None,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        self.location, self.run_id, self.ttl_seconds = location, run_id, ttl_seconds
        self.subject = subject
        self._clock = clock
        self._slot = lease_slot_at(location, s3)
        self._holder = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._held: LeaseRecord | None = None
        self._version = ""

    @property
    def held(self) -> LeaseRecord | None:
        """The lease as this process last wrote it; None when this process does not hold it."""
        return self._held

    def current(self) -> LeaseRecord | None:
        """What the lease file says now (None: no lease file, or an unreadable one)."""
        stored = self._slot.read()
        return None if stored is None else _parsed(stored[0])

    def acquire(self) -> LeaseRecord:
        """Create the lease, or take over an expired one; returns what was written.

        Raises :class:`LeaseHeldError` when a live holder has it.
        """
        with self._lock:
            for _ in range(_CAS_ATTEMPTS):
                now = self._clock()
                host, pid, expires = socket.gethostname(), os.getpid(), now + self.ttl_seconds
                mine = LeaseRecord(self.run_id, self._holder, host, pid, now, now, expires)
                version = self._slot.create(mine.to_json())
                if version is not None:
                    return self._holding(mine, version)
                stored = self._slot.read()
                if stored is None:
                    continue  # released between our create and our read
                theirs = _parsed(stored[0])
                if theirs is not None and theirs.holder == self._holder:
                    # Our own create, whose answer was lost and whose retry was refused.
                    return self._holding(theirs, stored[1])
                if theirs is not None and not theirs.expired(now) and not _holder_gone(theirs):
                    raise LeaseHeldError(theirs, now, self.subject)
                version = self._slot.replace(mine.to_json(), stored[1])
                if version is not None:
                    previous = "an unreadable lease" if theirs is None else theirs.describe(now)
                    logger.warning("run %s: took over the lease of %s", self.run_id, previous)
                    return self._holding(mine, version)
            raise LeaseError(f"run {self.run_id}: {self.location} kept changing; try again")

    def renew(self) -> LeaseRecord:
        """Push the expiry ``ttl_seconds`` past now; returns what was written.

        Raises :class:`LeaseLostError` when another process holds the lease now, or it is gone.
        """
        with self._lock:
            for _ in range(_CAS_ATTEMPTS):
                if self._held is None:
                    raise LeaseError(f"run {self.run_id}: renew() without holding the lease")
                now = self._clock()
                mine = replace(self._held, renewed_at=now, expires_at=now + self.ttl_seconds)
                version = self._slot.replace(mine.to_json(), self._version)
                if version is not None:
                    return self._holding(mine, version)
                current = self._reread()
                if self._held is None:
                    raise LeaseLostError(self.run_id, current, now)
            raise LeaseError(f"run {self.run_id}: {self.location} kept changing; try again")

    def release(self) -> bool:
        """Delete the lease if it is still ours; returns whether it was. Another process's lease
        is left alone (and logged)."""
        with self._lock:
            for _ in range(_CAS_ATTEMPTS):
                if self._held is None:
                    return False
                if self._slot.delete(self._version):
                    self._held = None
                    return True
                current = self._reread()
                if self._held is None:
                    holder = "gone" if current is None else current.describe(self._clock())
                    logger.warning("run %s: the lease is no longer ours (%s)", self.run_id, holder)
                    return False
            raise LeaseError(f"run {self.run_id}: {self.location} kept changing; try again")

    def _holding(self, record: LeaseRecord, version: str) -> LeaseRecord:
        self._held, self._version = record, version
        return record

    def _reread(self) -> LeaseRecord | None:
        """After a refused write: the lease as it is now. Still ours (a concurrent-request
        conflict, or our own write whose answer was lost): carry on from the version there.
        Otherwise this process no longer holds it."""
        stored = self._slot.read()
        current = None if stored is None else _parsed(stored[0])
        if stored is not None and current is not None and current.holder == self._holder:
            self._version = stored[1]
        else:
            self._held = None
        return current


class HeldLease:
    """A lease this process holds, renewed by a daemon thread every ``ttl/3`` until released.

    ``lost`` turns true when a renewal finds the lease taken over (this process stalled for
    longer than the ttl, and another one took the run): the caller should stop working on it.
    """

    def __init__(self, lease: RunLease, pause: Pause) -> None:
        self.lease = lease
        self._pause = pause
        self._stop = threading.Event()
        self._lost: LeaseLostError | None = None
        self._thread = threading.Thread(
            target=self._renew_until_stopped, name=f"lease-{lease.run_id}", daemon=True
        )

    @property
    def lost(self) -> bool:
        """Whether another process took the lease over (or it was deleted): stop the run."""
        return self._lost is not None

    @property
    def lost_to(self) -> LeaseRecord | None:
        """Who took the lease over; None if it was deleted, or is not lost."""
        return None if self._lost is None else self._lost.by

    def raise_if_lost(self) -> None:
        """Raise :class:`LeaseLostError`, naming the new holder, if the lease was lost."""
        if self._lost is not None:
            raise self._lost

    def _renew_until_stopped(self) -> None:
        while not self._pause(self._stop, self.lease.ttl_seconds / 3):
            try:
                self.lease.renew()
            except LeaseLostError as lost:
                self._lost = lost
                logger.error("%s", lost)
                return
            except (LeaseError, OSError, BotoCoreError, ClientError) as err:
                # Transient (store unreachable, a burst of conflicts): the next round retries,
                # and the lease stays ours unless it expires first and is taken over.
                logger.warning("run %s: could not renew the lease: %s", self.lease.run_id, err)


@contextmanager
def held_lease(
    location: str,
    run_id: str,
    *,
    ttl_seconds: float = DEFAULT_TTL_SECONDS,
    clock: Clock = time.time,
    pause: Pause = threading.Event.wait,
    s3: BaseClient | None = None,
    subject: str | None = None,
    wait_seconds: float = 0.0,
) -> Iterator[HeldLease]:
    """Hold the lease at ``location`` for run ``run_id`` for the ``with`` block, renewing it
    every ``ttl_seconds / 3``.

    Raises :class:`LeaseHeldError` on entry when a live process holds it (``subject``: what the
    lease guards, when it is not the run itself) and still holds it after ``wait_seconds``,
    trying again every ``ttl_seconds / 3``. On exit, renewals stop and the lease is deleted if
    it is still ours. ``pause`` is how the waits, and the renewing thread between renewals,
    pass (tests replace it, so that nothing sleeps).
    """
    lease = RunLease(location, run_id, ttl_seconds=ttl_seconds, clock=clock, s3=s3, subject=subject)
    _acquired_within(lease, wait_seconds, clock, pause)
    held = HeldLease(lease, pause)
    held._thread.start()
    try:
        yield held
    finally:
        held._stop.set()
        held._thread.join()
        if not held.lost:
            lease.release()


def held_index_lease(
    store: CheckpointStore, vector_bucket: str, index: str, run_id: str, wait_seconds: float = 0.0
) -> AbstractContextManager[HeldLease]:
    """:func:`held_lease` of the index ``vector_bucket/index`` for run ``run_id``: one run at a
    time plans against, loads and commits an index's state; another is refused (after
    ``wait_seconds``) with ``index b/i is being written by run X, …``."""
    return held_lease(
        index_lease_location(store, vector_bucket, index),
        run_id,
        subject=f"index {vector_bucket}/{index}",
        wait_seconds=wait_seconds,
    )


def _acquired_within(lease: RunLease, wait_seconds: float, clock: Clock, pause: Pause) -> None:
    """Acquire ``lease``, trying again every third of its ttl for up to ``wait_seconds`` while
    a live process holds it; then raise its :class:`LeaseHeldError`."""
    deadline = clock() + wait_seconds
    never = threading.Event()
    waiting = False
    while True:
        try:
            lease.acquire()
            return
        except LeaseHeldError as busy:
            left = deadline - clock()
            if left <= 0:
                raise
            if not waiting:
                logger.warning(
                    "%s is held by run %s, %s: waiting up to %.0f s for it to end",
                    lease.subject or f"run {lease.run_id}",
                    busy.holder.run_id,
                    busy.holder.describe(clock()),
                    left,
                )
                waiting = True
            pause(never, min(left, lease.ttl_seconds / 3))


# -- the lease file: read it, and change it only from the version read ------------------------


def lease_is_live(location: str, run_id: str, clock: Clock = time.time) -> bool:
    """Whether a live process holds the run's lease now (it is neither expired nor held by a
    process of this host that has ended)."""
    current = RunLease(location, run_id, clock=clock).current()
    return current is not None and not current.expired(clock()) and not _holder_gone(current)


def _holder_gone(record: LeaseRecord) -> bool:
    """Whether the holder was a process of this host that no longer runs: killed, its lease
    need not be waited out. (Another host's holder can only be judged by its expiry.)"""
    if record.host != socket.gethostname():
        return False
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def _parsed(data: bytes) -> LeaseRecord | None:
    try:
        return LeaseRecord.from_json(data)
    except ValueError:
        return None  # torn by a crash while it was being created: nobody holds it


def _iso(epoch_seconds: float, timespec: str = "milliseconds") -> str:
    moment = datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec=timespec)
    return moment.replace("+00:00", "Z")
