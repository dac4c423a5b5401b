"""The clock long-running cloud jobs are waited on, and the schedule they are polled on: shared
by the async jobs (StartAsyncInvoke) and the batch inference jobs (CreateModelInvocationJob).

Everything that waits goes through ``Clock``, so tests and benchmarks run the same scheduling
code on simulated time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


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
