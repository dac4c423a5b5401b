"""In-process pacing of AWS requests: a thread-safe token bucket that backs off when throttled.

Prefect has its own ``rate_limit()``, but each acquisition is a round trip to the Prefect server,
handled one at a time per process (~8 acquisitions/s measured with 16 threads, see
``shared/reference/prefect-notes.md``): far too slow to gate every Bedrock request. So a Prefect
global limit is taken once per shard, and inside the process every request is paced here.

One ``Pacer`` is shared by every thread that calls the same quota (one for Bedrock requests per
second, another for S3 Vectors vectors written per second). It is additive-increase /
multiplicative-decrease in spirit: ``slow_down()`` halves the rate when the service throttles, and
each ``record_success()`` wins back a share of what was lost, so the rate returns quickly from far
below the configured rate and creeps up on it (and on the quota) carefully.

When several runs share one account quota, ``tasks.shared_quota.SharedPacer`` puts a budget shared
through a Prefect rate limit (taken in batches, not per request) behind this process's ``Pacer``;
the embedder takes either, as a ``RequestPacer``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

DEFAULT_FLOOR_FRACTION = 1 / 20
DEFAULT_RECOVERY_SUCCESSES = 40
DEFAULT_COOLDOWN_SECONDS = 1.0


class RequestPacer(Protocol):
    """What the embedder needs of a pacer: a permit per HTTP attempt, and the service's verdicts."""

    def acquire(self, amount: float = 1.0) -> float:
        """Block until ``amount`` requests may go; returns the seconds waited."""
        ...

    def slow_down(self) -> bool:
        """The service throttled: go slower. False when the signal was ignored (cool-down)."""
        ...

    def record_success(self) -> None:
        """The service accepted a request."""
        ...


class Pacer:
    """A token bucket: ``acquire(n)`` blocks until ``n`` tokens (requests, or vectors) may go.

    ``rate_per_second`` is the most the pacer ever allows; ``burst`` is how many tokens may be
    spent at once after a quiet spell (default: one second's worth, like the AWS quotas it sits
    under). Callers queue fairly: each ``acquire`` reserves its tokens at once, going into debt
    if need be, and sleeps for exactly as long as the debt takes to repay, so ``n`` may exceed
    ``burst`` and nobody spins.

    ``slow_down()`` halves the current rate (never below ``min_rate_per_second``, default 1/20 of
    the configured rate) and forfeits any saved burst; throttling answers that arrive together
    are one signal, so further calls within ``cooldown_seconds`` of the last halving are
    ignored. ``record_success()`` closes 1/``recovery_successes`` of the gap to the configured
    rate (about ``recovery_successes`` successes win back two thirds of it).
    ``clock`` and ``sleep`` are injectable so tests need no real time.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        min_rate_per_second: float | None = None,
        recovery_successes: int = DEFAULT_RECOVERY_SUCCESSES,
        cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
    ) -> None:
        if rate_per_second <= 0:
            raise ValueError(f"rate_per_second must be positive, got {rate_per_second}")
        burst = max(1.0, rate_per_second) if burst is None else burst
        if burst <= 0:
            raise ValueError(f"burst must be positive, got {burst}")
        floor = (
            rate_per_second * DEFAULT_FLOOR_FRACTION
            if min_rate_per_second is None
            else min_rate_per_second
        )
        if not 0 < floor <= rate_per_second:
            raise ValueError(f"min_rate_per_second must be in (0, {rate_per_second}], got {floor}")
        if recovery_successes < 1:
            raise ValueError("recovery_successes must be at least 1")
        self._max_rate = float(rate_per_second)
        self._min_rate = float(floor)
        self._burst = float(burst)
        self._recovery_successes = recovery_successes
        self._cooldown = cooldown_seconds
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._rate = self._max_rate
        self._tokens = self._burst
        self._updated = clock()
        self._last_slow_down: float | None = None
        self._slow_downs = 0

    @property
    def rate_per_second(self) -> float:
        """The rate in force now: the configured rate, or less after throttling."""
        with self._lock:
            return self._rate

    @property
    def slow_downs(self) -> int:
        """How many times the rate was actually halved (ignored calls not counted)."""
        with self._lock:
            return self._slow_downs

    def acquire(self, amount: float = 1.0) -> float:
        """Block until ``amount`` tokens may be spent; returns the seconds waited (0 if none)."""
        if amount <= 0:
            raise ValueError(f"amount must be positive, got {amount}")
        with self._lock:
            self._refill()
            self._tokens -= amount
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self._rate
        if wait > 0:
            self._sleep(wait)
        return wait

    def slow_down(self) -> bool:
        """Halve the rate after a throttling answer; returns False if ignored (cool-down)."""
        with self._lock:
            now = self._clock()
            recent = self._last_slow_down is not None and (
                now - self._last_slow_down < self._cooldown
            )
            if recent:
                return False
            self._refill()
            self._rate = max(self._min_rate, self._rate / 2)
            # Saved-up burst would let the next callers go straight back over the quota.
            self._tokens = min(self._tokens, 0.0)
            self._last_slow_down = now
            self._slow_downs += 1
            return True

    def record_success(self) -> None:
        """Win back a step of rate after a request the service accepted."""
        with self._lock:
            if self._rate < self._max_rate:
                self._refill()
                gap = self._max_rate - self._rate
                # Closing a share of the gap never quite arrives: snap the last 1% shut.
                step = gap if gap < 0.01 * self._max_rate else gap / self._recovery_successes
                self._rate += step

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        self._updated = now
