"""Waiting on long-running cloud jobs: the clock, the schedule each job is polled on, and the
``Poller`` that keeps both for a runner. Shared by the async jobs (StartAsyncInvoke) and the
batch inference jobs (CreateModelInvocationJob).

Everything that waits goes through ``Clock``, so tests and benchmarks run the same scheduling
code on simulated time.
"""

from __future__ import annotations

import heapq
import logging
import random
import time
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from tasks.pacing import Pacer

logger = logging.getLogger(__name__)
Key = TypeVar("Key", bound=Hashable)


class PollSettings(Protocol):
    """The poll settings ``AsyncJobSettings`` and ``BatchInferenceSettings`` both have."""

    @property
    def poll_initial_seconds(self) -> float: ...
    @property
    def poll_multiplier(self) -> float: ...
    @property
    def poll_max_seconds(self) -> float: ...
    @property
    def poll_jitter(self) -> float: ...


class Clock(Protocol):
    """Where the runner reads the time and waits."""

    def now(self) -> float:
        """Epoch seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class PollSchedule:
    """When to ask about a job again: ``initial × multiplier**polls``, capped at ``maximum``,
    shortened by up to ``jitter`` of itself so jobs submitted together spread out."""

    initial: float
    multiplier: float
    maximum: float
    jitter: float

    @classmethod
    def of(cls, settings: PollSettings) -> PollSchedule:
        """The schedule the settings describe."""
        return cls(
            settings.poll_initial_seconds,
            settings.poll_multiplier,
            settings.poll_max_seconds,
            settings.poll_jitter,
        )

    def nominal(self, polls: int) -> float:
        """The interval after ``polls`` status answers, before jitter."""
        return min(self.maximum, self.initial * self.multiplier ** min(polls, 64))

    def interval(self, polls: int, draw: float) -> float:
        """The interval after ``polls`` answers, for a uniform ``draw`` in [0, 1)."""
        return self.nominal(polls) * (1.0 - self.jitter * draw)


class Poller(Generic[Key]):
    """The waiting side of a runner of many long jobs, keyed by ``Key``: when each job is next
    asked about (on its own ``PollSchedule``, jittered from one seeded stream), one pacer for
    every status call (``status_calls_per_second``, slowed down by throttling), and a backoff
    for submissions the service refuses for now, from ``first_backoff_seconds`` doubling up to
    the schedule's maximum."""

    def __init__(
        self,
        settings: PollSettings,
        status_calls_per_second: float,
        first_backoff_seconds: float,
        clock: Clock | None = None,
        seed: int = 0,
    ) -> None:
        self.clock = clock or SystemClock()
        self.schedule = PollSchedule.of(settings)
        self.pacer = Pacer(
            status_calls_per_second,
            clock=self.clock.now,
            sleep=self.clock.sleep,
            cooldown_seconds=0.0,
        )
        self._random = random.Random(seed)
        self._due: list[tuple[float, int, Key]] = []
        self._tiebreak = 0
        self._first_backoff = self._backoff = first_backoff_seconds
        self.submit_not_before = 0.0

    def interval(self, polls: int) -> float:
        """The wait before asking again about a job that has had ``polls`` answers."""
        return self.schedule.interval(polls, self._random.random())

    def ask_at(self, key: Key, at: float) -> None:
        """Ask about ``key`` at ``at`` (epoch seconds)."""
        self._tiebreak += 1
        heapq.heappush(self._due, (at, self._tiebreak, key))

    def due(self) -> Iterator[Key]:
        """The jobs to ask about now, earliest first (each taken off the schedule)."""
        while self._due and self._due[0][0] <= self.clock.now():
            yield heapq.heappop(self._due)[2]

    def next_wake(self, may_submit: bool) -> float | None:
        """When there is next something to do: a poll, or a submission when ``may_submit``."""
        times = [self._due[0][0]] if self._due else []
        if may_submit:
            times.append(self.submit_not_before)
        return min(times) if times else None

    def sleep_until(self, wake: float | None) -> None:
        """Wait until ``wake`` (not at all when None or past)."""
        if wake is not None:
            self.clock.sleep(max(0.0, wake - self.clock.now()))

    def may_submit(self) -> bool:
        """Whether a submission refused for now may be tried again."""
        return self.clock.now() >= self.submit_not_before

    def back_off_submission(self, code: str) -> None:
        """A submission was refused for now (``code``): wait, jittered, twice as long as last
        time, before the next."""
        delay = self._backoff * (1.0 - self.schedule.jitter * self._random.random())
        self.submit_not_before = self.clock.now() + delay
        self._backoff = min(self.schedule.maximum, self._backoff * 2)
        logger.info("job submission refused with %s; trying again in %.1f s", code, delay)

    def submission_accepted(self) -> None:
        """Submissions go through again: the next refusal backs off from the start."""
        self._backoff = self._first_backoff
