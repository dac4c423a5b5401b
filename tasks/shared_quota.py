"""A request budget shared by processes: granted in batches by a shared source, spent here one
request at a time.

Runs that share an account quota (a nightly run and a backfill, or the workers of one Dask run)
must stay under it together, not each on its own. A Prefect global concurrency limit used as a
rate limit can hold that budget for all of them, but each acquisition is a round trip to the
Prefect server (about 8 a second per process at best), so a process never asks per request: a
``SharedBudget`` takes ``batch`` requests at a time and hands them out to its threads. A refill
starts before the allowance runs out (at ``low_water``), so the round trip, and any wait for the
budget to free up, overlaps with the requests still in hand.

Granted requests are only good for ``token_lifetime_seconds`` (default one second, the window of
the quota they stand for): the source grants them against the budget of the moment, and a process
that sat on them and spent them later, on top of what the others are being granted by then,
would go over the quota. Expired grants are counted, not spent. What a process holds when its
last user (a shard) leaves, and a refill that lands after that, go back to the shared source at
once (``give_back``), so that a run finishing leaves its allowance to the runs still going.

``SharedPacer`` puts a ``SharedBudget`` behind the process's own ``Pacer`` (its ceiling, and its
slowing down after throttling), so the embedder uses it as it uses a ``Pacer``.

Nothing here imports Prefect: ``take`` is any function that blocks until ``n`` requests are
granted (``tasks.global_limits`` makes one of a Prefect rate limit), so tests drive it with fakes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from tasks.pacing import Pacer

logger = logging.getLogger(__name__)

TakeTokens = Callable[[int], None]
"""Blocks until ``n`` requests of the shared budget are granted to the caller; raises if the
budget cannot be reached (nothing is granted then)."""

GiveBack = Callable[[int], None]
"""Returns ``n`` granted, unspent requests to the shared budget, for other processes to use."""

StartRefill = Callable[[Callable[[], None]], None]
"""Runs a refill in the background (a thread of its own by default; tests run it by hand)."""

DEFAULT_TOKEN_LIFETIME_SECONDS = 1.0
DEFAULT_ACQUISITIONS_PER_SECOND = 4.0
BURST_SECONDS = 0.5


def bucket_capacity(requests_per_second: float) -> int:
    """Requests the shared bucket holds: half a second of the budget (at least 1). A full
    second, like the quota's own bucket, measurably let a few calls a run be throttled: grants
    are spent a moment after they are made, when the quota's bucket has refilled for less time
    than the shared one; half a second leaves that moment as headroom."""
    return max(1, int(requests_per_second * BURST_SECONDS))


def batch_size(
    requests_per_second: float, acquisitions_per_second: float = DEFAULT_ACQUISITIONS_PER_SECOND
) -> int:
    """Requests to take per acquisition so that a process spending the whole budget makes about
    ``acquisitions_per_second`` round trips to the shared source (at least 1 request, at most
    the bucket's capacity)."""
    if requests_per_second <= 0 or acquisitions_per_second <= 0:
        raise ValueError("requests_per_second and acquisitions_per_second must be positive")
    wanted = max(1, math.ceil(requests_per_second / acquisitions_per_second))
    return min(wanted, bucket_capacity(requests_per_second))


class SharedBudgetError(RuntimeError):
    """The shared budget could not be reached: the requests waiting for it were not granted."""


@dataclass(frozen=True)
class BudgetCounters:
    """What a ``SharedBudget`` has done. ``acquisitions`` counts batches granted by the source
    (one round trip each, plus the server's waits); ``granted`` the requests in them;
    ``spent`` those handed out; ``expired`` those dropped unspent after their lifetime;
    ``given_back`` those returned unspent to the source; ``failures`` refills that raised;
    ``waited_seconds`` the callers' summed waits for a grant."""

    acquisitions: int
    granted: int
    spent: int
    expired: int
    given_back: int
    failures: int
    waited_seconds: float

    @property
    def held(self) -> int:
        """Requests granted and not yet spent, expired or given back: the allowance now."""
        return self.granted - self.spent - self.expired - self.given_back


def _in_daemon_thread(refill: Callable[[], None]) -> None:
    threading.Thread(target=refill, name="shared-budget-refill", daemon=True).start()


class SharedBudget:
    """This process's allowance of a budget shared with other processes through ``take``.

    ``acquire(n)`` hands out ``n`` requests, blocking while the allowance is empty. Whenever the
    allowance falls to ``low_water`` a refill of ``batch`` requests is started, one at a time (by
    default whenever less than a batch is in hand: a process alone then keeps up with the whole
    budget through round trips as long as a batch lasts); callers that find nothing wait for it
    on a condition (no polling). A refill that raises wakes the callers waiting for it with
    ``SharedBudgetError``; the next ``acquire`` tries again. With ``give_back``, users (shards)
    hold ``in_use()`` while they acquire: when the last one leaves, the unexpired allowance is
    given back, and so is a refill that lands while nobody uses the budget or waits for it.
    ``clock`` and ``start_refill`` are injectable for tests.
    """

    def __init__(
        self,
        take: TakeTokens,
        batch: int,
        *,
        low_water: int | None = None,
        token_lifetime_seconds: float = DEFAULT_TOKEN_LIFETIME_SECONDS,
        give_back: GiveBack | None = None,
        clock: Callable[[], float] = time.monotonic,
        start_refill: StartRefill = _in_daemon_thread,
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        low_water = batch - 1 if low_water is None else low_water
        if not 0 <= low_water < batch:
            raise ValueError(f"low_water must be in [0, {batch}), got {low_water}")
        if token_lifetime_seconds <= 0:
            raise ValueError("token_lifetime_seconds must be positive")
        self._take = take
        self._batch = batch
        self._low_water = low_water
        self._lifetime = token_lifetime_seconds
        self._clock = clock
        self._start_refill = start_refill
        self._give_back = give_back
        self._changed = threading.Condition(threading.Lock())
        self._grants: deque[list[float]] = deque()  # [expires at, requests left], oldest first
        self._available = 0
        self._refilling = False
        self._users = self._waiting = 0
        self._last_error: BaseException | None = None
        self._acquisitions = self._granted = self._spent = self._expired = self._failures = 0
        self._given_back = 0
        self._waited = 0.0

    @property
    def batch(self) -> int:
        """Requests taken from the shared source per acquisition."""
        return self._batch

    @property
    def counters(self) -> BudgetCounters:
        """The counts so far (see ``BudgetCounters``)."""
        with self._changed:
            self._drop_expired()
            return BudgetCounters(
                acquisitions=self._acquisitions,
                granted=self._granted,
                spent=self._spent,
                expired=self._expired,
                given_back=self._given_back,
                failures=self._failures,
                waited_seconds=self._waited,
            )

    def acquire(self, count: int = 1) -> float:
        """Block until ``count`` requests of the budget are the caller's; returns the seconds
        waited (0 if the allowance had them). Raises ``SharedBudgetError`` when a refill the
        caller was waiting for failed."""
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        started = self._clock()
        needed = count
        with self._changed:
            while True:
                self._drop_expired()
                needed -= self._spend(needed)
                failures = self._failures
                if not self._refilling and self._available <= self._low_water:
                    self._refilling = True
                    # Started outside the lock: a refill run inline (as tests do) takes it.
                    self._changed.release()
                    try:
                        self._start_refill(self._refill)
                    except BaseException:
                        self._changed.acquire()
                        self._refilling = False
                        raise
                    self._changed.acquire()
                else:
                    if needed == 0:
                        break
                    self._waiting += 1
                    try:
                        self._changed.wait()
                    finally:
                        self._waiting -= 1
                if needed and self._failures != failures:
                    raise SharedBudgetError(
                        f"the shared request budget could not be reached: {self._last_error}"
                    ) from self._last_error
            waited = self._clock() - started
            self._waited += waited
            return waited

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Mark a user (a shard) of the budget for the duration; when the last one leaves, the
        unexpired allowance goes back to the shared source (with ``give_back``)."""
        with self._changed:
            self._users += 1
        try:
            yield
        finally:
            with self._changed:
                self._users -= 1
                unused = self._take_all_back() if self._users == 0 else 0
            self._return(unused)

    def _take_all_back(self) -> int:
        """Empty the allowance for giving back (expired grants excepted); returns its size."""
        if self._give_back is None:
            return 0
        self._drop_expired()
        unused = self._available
        self._grants.clear()
        self._available = 0
        self._given_back += unused
        return unused

    def _return(self, unused: int) -> None:
        if unused and self._give_back is not None:
            try:
                self._give_back(unused)
            except Exception as err:  # the source keeps them until they decay: only a waste
                logger.warning(
                    "could not give %d requests back to the shared budget: %s", unused, err
                )

    def _spend(self, wanted: int) -> int:
        """Take up to ``wanted`` requests from the oldest grants; returns how many."""
        taken = min(wanted, self._available)
        left = taken
        while left:
            grant = self._grants[0]
            used = min(left, int(grant[1]))
            grant[1] -= used
            left -= used
            if grant[1] == 0:
                self._grants.popleft()
        self._available -= taken
        self._spent += taken
        return taken

    def _drop_expired(self) -> None:
        now = self._clock()
        while self._grants and self._grants[0][0] <= now:
            _, left = self._grants.popleft()
            self._available -= int(left)
            self._expired += int(left)

    def _refill(self) -> None:
        """Take a batch from the shared source and wake the waiting callers (or fail them)."""
        try:
            self._take(self._batch)
        except Exception as err:
            logger.warning("could not take %d requests of the shared budget: %s", self._batch, err)
            with self._changed:
                self._refilling = False
                self._failures += 1
                self._last_error = err
                self._changed.notify_all()
            return
        with self._changed:
            self._grants.append([self._clock() + self._lifetime, self._batch])
            self._available += self._batch
            self._acquisitions += 1
            self._granted += self._batch
            self._refilling = False
            # A prefetch that lands after the last shard of this process ended is not needed.
            idle = self._users == 0 and self._waiting == 0
            unused = self._take_all_back() if idle else 0
            self._changed.notify_all()
        self._return(unused)


class SharedPacer:
    """A ``RequestPacer`` for runs that share a quota: each request is paced by this process's
    ``local`` Pacer (its ceiling; it halves after throttling and wins the rate back) and then
    takes one request of the shared ``budget``."""

    def __init__(self, local: Pacer, budget: SharedBudget) -> None:
        self._local = local
        self._budget = budget

    @property
    def local(self) -> Pacer:
        """The process's own pacer."""
        return self._local

    @property
    def budget(self) -> SharedBudget:
        """The process's allowance of the shared budget."""
        return self._budget

    def in_use(self) -> AbstractContextManager[None]:
        """Hold while embedding a shard (see ``SharedBudget.in_use``)."""
        return self._budget.in_use()

    def acquire(self, amount: float = 1.0) -> float:
        """Block until ``amount`` requests may go, locally and in the shared budget; returns
        the seconds waited for both."""
        # Locally paced first: a grant is then spent as soon as it is handed out, not held
        # while this thread waits its turn here.
        waited = self._local.acquire(amount)
        return waited + self._budget.acquire(math.ceil(amount))

    def slow_down(self) -> bool:
        """Halve the local rate after throttling (see ``Pacer.slow_down``)."""
        return self._local.slow_down()

    def record_success(self) -> None:
        """Win back local rate after an accepted request (see ``Pacer.record_success``)."""
        self._local.record_success()
