"""Misbehaviour on request: latency, a request-rate quota, random throttles and 5xx, failing jobs
(async invocations and batch inference jobs).

Every decision is drawn from a hash of (seed, operation, n-th call of that operation), so a
given sequence of calls meets the same faults on every run whatever the thread scheduling.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Self

from emulator.errors import ServiceError


@dataclass(frozen=True)
class Misbehaviour:
    """Faults applied to the operations named in ``operations`` (all operations when empty).

    ``requests_per_second`` is a quota shared by those operations: a token bucket holding one
    second of requests; a call finding it empty is answered with the service's throttling error.
    ``throttle_rate`` and ``server_error_rate`` are shares of calls answered with a throttling
    error or a 500/503 at random, on top of the quota. Latency is added before answering.
    """

    operations: frozenset[str] = frozenset()
    seed: int = 0
    latency_seconds: float = 0.0
    latency_jitter_seconds: float = 0.0
    requests_per_second: float = 0.0
    throttle_rate: float = 0.0
    server_error_rate: float = 0.0

    def __post_init__(self) -> None:
        check_fractions(self, "throttle_rate", "server_error_rate")
        for name in ("latency_seconds", "latency_jitter_seconds", "requests_per_second"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def applies_to(self, operation: str) -> bool:
        """Whether calls of ``operation`` are subject to this misbehaviour."""
        return not self.operations or operation in self.operations

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Misbehaviour:
        """Build from a JSON object with the field names; unknown names are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(document) - known
        if unknown:
            raise ValueError(f"unknown misbehaviour settings: {sorted(unknown)}")
        values = dict(document)
        if "operations" in values:
            values["operations"] = frozenset(values["operations"])
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``from_json`` reads."""
        document = asdict(self)
        document["operations"] = sorted(self.operations)
        return document


class JsonFields:
    """A frozen dataclass of settings read from and written to a JSON object with its field
    names (``_KIND`` names them in the error for unknown ones)."""

    _KIND: ClassVar[str] = "settings"

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Self:
        """Build from a JSON object with the field names; unknown names are an error."""
        unknown = set(document) - {f.name for f in fields(cls)}  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"unknown {cls._KIND}: {sorted(unknown)}")
        return cls(**dict(document))

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``from_json`` reads."""
        return asdict(self)  # type: ignore[call-overload]


def check_fractions(settings: object, *names: str) -> None:
    """ValueError unless each of ``names`` of ``settings`` lies between 0 and 1."""
    for name in names:
        value = getattr(settings, name)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class AsyncJobBehaviour(JsonFields):
    """How the stand-in's async embedding jobs run.

    A job stays ``InProgress`` for ``job_seconds`` plus ``seconds_per_media_minute`` for each
    minute of input media, then ends ``Failed`` with probability ``failure_rate``, else
    ``Completed``; a completed job is partial with probability ``partial_rate``, in which case
    each of its segments fails with probability ``segment_failure_rate``.
    """

    _KIND: ClassVar[str] = "async job settings"

    seed: int = 0
    job_seconds: float = 2.0
    seconds_per_media_minute: float = 0.0
    failure_rate: float = 0.0
    partial_rate: float = 0.0
    segment_failure_rate: float = 0.25

    def __post_init__(self) -> None:
        check_fractions(self, "failure_rate", "partial_rate", "segment_failure_rate")
        if self.job_seconds < 0 or self.seconds_per_media_minute < 0:
            raise ValueError("job durations must not be negative")


@dataclass(frozen=True)
class BatchJobBehaviour(JsonFields):
    """How the stand-in's batch inference jobs (CreateModelInvocationJob) run.

    A job spends ``phase_seconds`` in each of ``Submitted`` and ``Validating``, then
    ``queue_seconds`` ``Scheduled``, then ``job_seconds`` plus ``seconds_per_record`` per record
    ``InProgress``; a stop spends ``phase_seconds`` ``Stopping``. A slow job (long queue or long
    run) meets its own timeout: ``Expired`` if it is still queued, ``PartiallyCompleted`` if it
    is running. A job that runs to its end fails (``Failed``) with probability ``failure_rate``;
    otherwise it is partial with probability ``partial_rate``, in which case each record is left
    unprocessed with probability ``record_failure_rate`` and the job ends ``PartiallyCompleted``.
    """

    _KIND: ClassVar[str] = "batch job settings"

    seed: int = 0
    phase_seconds: float = 0.5
    queue_seconds: float = 0.5
    job_seconds: float = 2.0
    seconds_per_record: float = 0.0
    failure_rate: float = 0.0
    partial_rate: float = 0.0
    record_failure_rate: float = 0.25

    def __post_init__(self) -> None:
        check_fractions(self, "failure_rate", "partial_rate", "record_failure_rate")
        for name in ("phase_seconds", "queue_seconds", "job_seconds", "seconds_per_record"):
            if getattr(self, name) < 0:
                raise ValueError("batch job durations must not be negative")


def seeded_fraction(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``parts``: the same arguments, the same number."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass
class FaultInjector:
    """Applies a service's misbehaviours to each call before it is served.

    ``throttling_code`` is the service's throttling error (``ThrottlingException`` for Bedrock,
    ``TooManyRequestsException`` for S3 Vectors); ``make_error`` builds that service's errors.
    """

    throttling_code: str
    make_error: Callable[..., ServiceError]
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    _rules: tuple[Misbehaviour, ...] = ()
    _calls: Counter[str] = field(default_factory=Counter)
    _buckets: dict[int, _Bucket] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rules(self) -> tuple[Misbehaviour, ...]:
        """The misbehaviours in force."""
        return self._rules

    def configure(self, rules: tuple[Misbehaviour, ...]) -> None:
        """Replace the misbehaviours in force; call counts and quotas start afresh."""
        with self._lock:
            self._rules = tuple(rules)
            self._calls.clear()
            self._buckets.clear()

    def before_call(self, operation: str) -> None:
        """Sleep for added latency, then raise the fault this call is due, if any."""
        with self._lock:
            call_number = self._calls[operation]
            self._calls[operation] += 1
            applicable = [
                (index, rule)
                for index, rule in enumerate(self._rules)
                if rule.applies_to(operation)
            ]
            # Every applicable quota is charged, even when an earlier one already refuses the call.
            spent = [self._take_token(index, rule) for index, rule in applicable]
            over_quota = False in spent
            rules = [rule for _, rule in applicable]
        delay = 0.0
        for rule in rules:
            jitter = rule.latency_jitter_seconds * seeded_fraction(
                rule.seed, "latency", operation, call_number
            )
            delay += rule.latency_seconds + jitter
        if delay > 0:
            self.sleep(delay)
        if over_quota:
            raise self._throttle()
        for rule in rules:
            if seeded_fraction(rule.seed, "throttle", operation, call_number) < rule.throttle_rate:
                raise self._throttle()
            draw = seeded_fraction(rule.seed, "5xx", operation, call_number)
            if draw < rule.server_error_rate:
                if draw < rule.server_error_rate / 2:
                    raise self.make_error("InternalServerException", "Internal server error")
                raise self.make_error(
                    "ServiceUnavailableException", "Service unavailable, please try again"
                )

    def _take_token(self, index: int, rule: Misbehaviour) -> bool | None:
        """Spend one request from ``rule``'s quota: False when it is exhausted, None if no quota."""
        if rule.requests_per_second <= 0:
            return None
        capacity = max(1.0, rule.requests_per_second)
        now = self.clock()
        bucket = self._buckets.setdefault(index, _Bucket(tokens=capacity, updated=now))
        bucket.tokens = min(
            capacity, bucket.tokens + (now - bucket.updated) * rule.requests_per_second
        )
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def _throttle(self) -> ServiceError:
        return self.make_error(
            self.throttling_code, "Too many requests, please wait before trying again."
        )
