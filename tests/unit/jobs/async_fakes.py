"""Fakes for driving the real ``AsyncJobRunner`` on simulated time, with no network.

``SimulatedClock`` is the only clock (sleeping advances it), ``ScriptedJobService`` plays
Bedrock's StartAsyncInvoke/GetAsyncInvoke from a script, ``RecordingStage`` supplies
prepare/collect/quarantine and remembers what it was given, and ``Harness`` wires them to a
``JobLedger`` over a ``CheckpointStore`` in a temporary directory.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from botocore.exceptions import ClientError

from tasks.job_ledger import JobLedger, JobRecord
from tasks.jobs.runner import AsyncJobRunner, Collected, CollectError, InputRefusedError, Submission
from tasks.jobs.service import JobState
from tasks.outcomes import AsyncOutcome
from tasks.records import Unit
from tasks.settings import AsyncJobSettings
from tasks.store import CheckpointStore

EPOCH = 1_700_000_000.0
ARN_PREFIX = "arn:aws:bedrock:us-east-1:123456789012:async-invoke/"
RUN_ID = "run-async"
SEGMENT_SECONDS = 15.0


class SimulatedKill(BaseException):
    """The process dying: a ``BaseException``, so nothing in the runner catches it."""


class ClockRanAwayError(AssertionError):
    """The runner slept far longer (or more often) than any test scenario needs."""


class SimulatedClock:
    """``Clock`` on simulated time: ``sleep(s)`` advances ``now()`` by ``s`` at once.

    Raises ``ClockRanAwayError`` past ``limit_seconds`` or ``max_sleeps``, so a runner that
    never finishes fails the test instead of hanging it."""

    def __init__(
        self, start: float = EPOCH, limit_seconds: float = 30 * 86_400.0, max_sleeps: int = 200_000
    ) -> None:
        self.start = start
        self._now = start
        self._limit = start + limit_seconds
        self._max_sleeps = max_sleeps
        self.sleeps = 0

    def now(self) -> float:
        """The simulated epoch seconds."""
        return self._now

    def sleep(self, seconds: float) -> None:
        """Advance the simulated time by ``seconds`` (never negative)."""
        assert seconds >= 0, f"asked to sleep {seconds} s"
        self._now += seconds
        self.sleeps += 1
        if self._now > self._limit or self.sleeps > self._max_sleeps:
            raise ClockRanAwayError(f"simulated clock ran away: {self.sleeps} sleeps")


def client_error(code: str, message: str, operation: str) -> ClientError:
    """A botocore ``ClientError`` as the service would answer it."""
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


def throttled(operation: str) -> ClientError:
    """The throttling answer of ``operation``."""
    return client_error("ThrottlingException", "Rate exceeded", operation)


def arn_for(token: str) -> str:
    """The invocation ARN Bedrock gives a ``clientRequestToken``: the same token, the same ARN."""
    return ARN_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class JobPlan:
    """How a scripted job goes: it runs ``seconds`` (``math.inf``: forever), then ends with
    ``status`` and ``failure_message``; a ``lost`` job is unknown to GetAsyncInvoke."""

    seconds: float = 60.0
    status: Literal["Completed", "Failed"] = "Completed"
    failure_message: str | None = None
    lost: bool = False


@dataclass
class FakeJob:
    """One job the fake service created (once per token)."""

    token: str
    arn: str
    started_at: float
    plan: JobPlan
    seen_ended: bool = False

    @property
    def ends_at(self) -> float:
        """When the job ends on the simulated clock."""
        return self.started_at + self.plan.seconds


@dataclass(frozen=True)
class StartCall:
    """A StartAsyncInvoke call: its token, when, and whether the service accepted it."""

    token: str
    at: float
    accepted: bool


@dataclass(frozen=True)
class StatusCall:
    """A GetAsyncInvoke call: the ARN, when, and the answer (a status or an error code)."""

    arn: str
    at: float
    answer: str

    @property
    def answered(self) -> bool:
        """Whether the service gave a status (not an error)."""
        return self.answer in ("InProgress", "Completed", "Failed")


# (1-based call number, token or ARN) -> the error to raise on that call, or None.
CallHook = Callable[[int, str], BaseException | None]


class ScriptedJobService:
    """``JobService`` playing Bedrock from a script, on the simulated clock.

    ``start`` creates one job per ``clientRequestToken`` (a repeated token gets the job it
    already has, as Bedrock's idempotency promises) and records every call. ``refuse_start``
    may return a ``ClientError`` (raised before any job exists) or a ``SimulatedKill`` (raised
    after the job was created and the call recorded: the process died before it heard the ARN).
    ``state`` answers InProgress until the job's planned end, then its planned status;
    ``refuse_status`` may return an error to raise instead. ``on_start`` sees each token first.
    """

    def __init__(
        self,
        clock: SimulatedClock,
        plans: Mapping[str, JobPlan] | None = None,
        default_plan: JobPlan | None = None,
        refuse_start: CallHook | None = None,
        refuse_status: CallHook | None = None,
        on_start: Callable[[str], None] | None = None,
    ) -> None:
        self._clock = clock
        self.plans = dict(plans or {})
        self.default_plan = default_plan or JobPlan()
        self.refuse_start = refuse_start
        self.refuse_status = refuse_status
        self.on_start = on_start
        self.jobs: dict[str, FakeJob] = {}
        self.start_calls: list[StartCall] = []
        self.status_calls: list[StatusCall] = []
        self.max_in_flight = 0
        self.in_flight_at_start: list[int] = []

    def start(self, arguments: Mapping[str, Any]) -> str:
        """StartAsyncInvoke: the ARN of the token's job (created on first sight)."""
        token = str(arguments["clientRequestToken"])
        now = self._clock.now()
        if self.on_start is not None:
            self.on_start(token)
        error = self.refuse_start(len(self.start_calls) + 1, token) if self.refuse_start else None
        if isinstance(error, ClientError):
            self.start_calls.append(StartCall(token, now, accepted=False))
            raise error
        job = self.jobs.get(token)
        if job is None:
            plan = self.plans.get(token, self.default_plan)
            job = self.jobs[token] = FakeJob(token, arn_for(token), now, plan)
        self.start_calls.append(StartCall(token, now, accepted=True))
        self.in_flight_at_start.append(self.in_flight())
        self.max_in_flight = max(self.max_in_flight, self.in_flight())
        if error is not None:
            raise error
        return job.arn

    def state(self, invocation_arn: str) -> JobState:
        """GetAsyncInvoke: InProgress until the planned end, then the planned status."""
        now = self._clock.now()
        number = len(self.status_calls) + 1
        error = self.refuse_status(number, invocation_arn) if self.refuse_status else None
        job = next((j for j in self.jobs.values() if j.arn == invocation_arn), None)
        if error is None and (job is None or job.plan.lost):
            error = client_error(
                "ValidationException", f"Invocation {invocation_arn} not found", "GetAsyncInvoke"
            )
        if error is not None:
            code = error.response["Error"]["Code"] if isinstance(error, ClientError) else "kill"
            self.status_calls.append(StatusCall(invocation_arn, now, code))
            raise error
        assert job is not None
        folder = f"s3://novaflow-async/output/{invocation_arn.rpartition('/')[2]}"
        if now < job.ends_at:
            self.status_calls.append(StatusCall(invocation_arn, now, "InProgress"))
            return JobState("InProgress", folder)
        job.seen_ended = True
        self.status_calls.append(StatusCall(invocation_arn, now, job.plan.status))
        return JobState(job.plan.status, folder, job.ends_at, job.plan.failure_message)

    def in_flight(self) -> int:
        """Jobs started whose end no status call has reported yet."""
        return sum(not job.seen_ended for job in self.jobs.values())

    def accepted_tokens(self) -> list[str]:
        """Tokens of the accepted start calls, in call order."""
        return [call.token for call in self.start_calls if call.accepted]

    def calls_for(self, token: str) -> list[StatusCall]:
        """The status calls about the job of ``token``."""
        return [call for call in self.status_calls if call.arn == arn_for(token)]


def token_for(unit_key: str, attempt: int) -> str:
    """The deterministic ``clientRequestToken`` ``RecordingStage`` gives an attempt."""
    return f"tok-{unit_key}-{attempt}"


@dataclass
class RecordingStage:
    """prepare/collect/quarantine for the runner, recording what each was given.

    ``refused`` makes prepare raise ``InputRefusedError`` for a unit (``refused_attempts`` for
    one attempt of it); ``unreadable`` makes
    collect raise ``CollectError`` for a (unit, attempt); ``collected`` overrides the segment
    counts (default: one embedded segment per 15 s of the unit); ``kill_in_quarantine`` makes
    quarantine die (``SimulatedKill``) for a unit before it records anything."""

    refused: Mapping[str, InputRefusedError] = field(default_factory=dict)
    refused_attempts: Mapping[tuple[str, int], InputRefusedError] = field(default_factory=dict)
    unreadable: set[tuple[str, int]] = field(default_factory=set)
    collected_counts: Mapping[str, Collected] = field(default_factory=dict)
    kill_in_quarantine: set[str] = field(default_factory=set)
    prepared: list[tuple[str, int]] = field(default_factory=list)
    collected: list[tuple[str, JobRecord, str]] = field(default_factory=list)
    quarantined: list[tuple[str, JobRecord]] = field(default_factory=list)

    def prepare(self, unit: Unit, attempt: int) -> Submission:
        """A submission whose token is ``tok-<key>-<attempt>``."""
        self.prepared.append((unit.key, attempt))
        if unit.key in self.refused:
            raise self.refused[unit.key]
        if (unit.key, attempt) in self.refused_attempts:
            raise self.refused_attempts[unit.key, attempt]
        token = token_for(unit.key, attempt)
        arguments = {
            "modelId": "amazon.nova-2-multimodal-embeddings-v1:0",
            "clientRequestToken": token,
            "modelInput": {"mediaSource": {"s3Location": {"uri": f"s3://in/{unit.key}"}}},
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://novaflow-async/output"}},
        }
        return Submission(f"s3://in/{unit.key}", "s3://novaflow-async/output", token, arguments)

    def collect(self, unit: Unit, record: JobRecord, folder: str) -> Collected:
        """The unit's segment counts, or ``CollectError`` for an unreadable attempt."""
        if (unit.key, record.attempt) in self.unreadable:
            raise CollectError(f"{folder}: segmented-embedding-result.json is missing")
        self.collected.append((unit.key, record, folder))
        if unit.key in self.collected_counts:
            return self.collected_counts[unit.key]
        seconds = (unit.end_seconds or 0.0) - (unit.start_seconds or 0.0)
        return Collected(embedded=max(1, math.ceil(seconds / SEGMENT_SECONDS)), quarantined=0)

    def quarantine(self, unit: Unit, record: JobRecord) -> None:
        """Record the unit's failure."""
        if unit.key in self.kill_in_quarantine:
            raise SimulatedKill(f"killed while quarantining {unit.key}")
        self.quarantined.append((unit.key, record))


def video_unit(key: str, seconds: float = 600.0) -> Unit:
    """An async video unit ``key`` of ``seconds``."""
    return Unit(
        key=key,
        item_id=key,
        uri=f"/corpus/{key}.mp4",
        kind="video",
        route="async",
        start_seconds=0.0,
        end_seconds=seconds,
    )


def units_named(*keys: str, seconds: float = 600.0) -> list[Unit]:
    """Video units of ``seconds`` under ``keys``."""
    return [video_unit(key, seconds) for key in keys]


def gaps_between(times: list[float]) -> list[float]:
    """The gaps between successive ``times``."""
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@dataclass
class Harness:
    """Clock, service, stage and store of one scenario; ``run`` drives a fresh runner."""

    root: Path
    settings: AsyncJobSettings
    clock: SimulatedClock = field(default_factory=SimulatedClock)
    stage: RecordingStage = field(default_factory=RecordingStage)
    service: ScriptedJobService | None = None
    seed: int = 7

    def __post_init__(self) -> None:
        self.store = CheckpointStore(str(self.root))
        if self.service is None:
            self.service = ScriptedJobService(self.clock)

    @property
    def jobs(self) -> ScriptedJobService:
        """The fake service (always set after construction)."""
        assert self.service is not None
        return self.service

    def ledger(self) -> JobLedger:
        """A fresh ledger object read from the store, as a restarted process would."""
        return JobLedger(self.store, RUN_ID)

    def runner(self, stage: RecordingStage | None = None) -> AsyncJobRunner:
        """A new runner over a fresh ledger object."""
        stage = stage or self.stage
        return AsyncJobRunner(
            self.ledger(),
            self.jobs,
            self.settings,
            stage.prepare,
            stage.collect,
            stage.quarantine,
            clock=self.clock,
            seed=self.seed,
        )

    def run(self, units: list[Unit], stage: RecordingStage | None = None) -> AsyncOutcome:
        """Run a new runner over ``units`` to the end."""
        return self.runner(stage).run(units)


def settings_with(**overrides: Any) -> AsyncJobSettings:
    """``AsyncJobSettings`` with ``overrides``."""
    return AsyncJobSettings(**overrides)


def status_call_count(root: Path, seconds: float, jitter: float = 0.2) -> int:
    """Status calls a runner makes about one job lasting ``seconds``."""
    harness = Harness(root, settings_with(poll_jitter=jitter))
    harness.jobs.default_plan = JobPlan(seconds)
    harness.run(units_named("one"))
    return len(harness.jobs.status_calls)
