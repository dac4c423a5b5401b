"""BatchJobRunner on simulated time against a scripted Bedrock batch control plane: every job is
created once and collected once however it ends, at most ``max_jobs_in_flight`` run, refused
creations back off and keep their token, polling follows the capped schedule and slows down on
throttling, a lost job is collected as failed, and a restarted run never creates a job twice."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from tasks.batch.ledger import BatchJob, BatchLedger
from tasks.batch.runner import CREATE_RETRY_FIRST_SECONDS, BatchJobRunner
from tasks.batch.service import BatchJobState
from tasks.polling import PollSchedule
from tasks.settings import BatchInferenceSettings
from tasks.store import CheckpointStore
from tests.unit.jobs.async_fakes import (
    SimulatedClock,
    SimulatedKill,
    client_error,
    gaps_between,
    throttled,
)

RUN_ID = "run-batch"
ARN_PREFIX = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/"
ENDED_STATUSES = ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")


def arn_for(token: str) -> str:
    """The job ARN the scripted service gives a token: the same token, the same ARN."""
    return ARN_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class JobScript:
    """How a scripted job goes: ``seconds`` of ``InProgress``, then ``status`` with
    ``message``; a ``lost`` job is unknown to GetModelInvocationJob."""

    seconds: float = 600.0
    status: str = "Completed"
    message: str = ""
    lost: bool = False


@dataclass
class ScriptedJob:
    token: str
    arn: str
    created_at: float
    script: JobScript
    seen_ended: bool = False


@dataclass(frozen=True)
class Call:
    """A call the service answered or refused: the token or ARN, when, and the answer (a
    status, ``created``, or an error code)."""

    subject: str
    at: float
    answer: str


# (1-based call number, token or ARN) -> the error to raise on that call, or None.
CallHook = Callable[[int, str], BaseException | None]


@dataclass
class ScriptedBatchService:
    """``BatchService`` playing CreateModelInvocationJob / GetModelInvocationJob on the
    simulated clock. One job per ``clientRequestToken`` (a repeated token gets the job it has).
    ``refuse_create`` may return a ``ClientError`` (raised, no job made) or another exception
    (raised after the job is made: the process died before it heard the ARN);
    ``refuse_status`` an error to raise instead of answering; ``on_status`` sees each ARN
    before it is answered."""

    clock: SimulatedClock
    scripts: dict[str, JobScript] = field(default_factory=dict)
    default: JobScript = field(default_factory=JobScript)
    refuse_create: CallHook | None = None
    refuse_status: CallHook | None = None
    on_status: Callable[[str], None] | None = None
    jobs: dict[str, ScriptedJob] = field(default_factory=dict)
    create_calls: list[Call] = field(default_factory=list)
    status_calls: list[Call] = field(default_factory=list)
    in_flight_after_create: list[int] = field(default_factory=list)

    def create(self, arguments: Mapping[str, Any]) -> str:
        token = str(arguments["clientRequestToken"])
        now = self.clock.now()
        hook = self.refuse_create
        error = hook(len(self.create_calls) + 1, token) if hook is not None else None
        if isinstance(error, ClientError):
            self.create_calls.append(Call(token, now, error.response["Error"]["Code"]))
            raise error
        job = self.jobs.get(token)
        if job is None:
            script = self.scripts.get(token, self.default)
            job = self.jobs[token] = ScriptedJob(token, arn_for(token), now, script)
        self.create_calls.append(Call(token, now, "created"))
        self.in_flight_after_create.append(self.in_flight())
        if error is not None:
            raise error
        return job.arn

    def state(self, job_arn: str) -> BatchJobState:
        now = self.clock.now()
        if self.on_status is not None:
            self.on_status(job_arn)
        hook = self.refuse_status
        error = hook(len(self.status_calls) + 1, job_arn) if hook is not None else None
        job = next((j for j in self.jobs.values() if j.arn == job_arn), None)
        if error is None and (job is None or job.script.lost):
            error = client_error(
                "ResourceNotFoundException",
                f"Could not find the model invocation job {job_arn}.",
                "GetModelInvocationJob",
            )
        if error is not None:
            code = error.response["Error"]["Code"] if isinstance(error, ClientError) else "error"
            self.status_calls.append(Call(job_arn, now, code))
            raise error
        assert job is not None
        ends_at = job.created_at + job.script.seconds
        if now < ends_at:
            self.status_calls.append(Call(job_arn, now, "InProgress"))
            return BatchJobState("InProgress")
        job.seen_ended = True
        self.status_calls.append(Call(job_arn, now, job.script.status))
        return BatchJobState(job.script.status, job.script.message, ends_at)

    def in_flight(self) -> int:
        """Jobs created whose end no status call has reported yet."""
        return sum(not job.seen_ended for job in self.jobs.values())

    def calls_about(self, token: str) -> list[Call]:
        """The status calls about the job of ``token``."""
        return [call for call in self.status_calls if call.subject == arn_for(token)]


def job_numbered(number: int, records: int = 500) -> BatchJob:
    """Job ``number`` as the stage records it, before it is created."""
    return BatchJob(
        number=number,
        shards=(2 * number - 1, 2 * number),
        records=records,
        input_bytes=records * 400,
        token=f"token-{number:05d}",
        name=f"novaflow-{RUN_ID}-{number:05d}",
        input_uri=f"s3://novaflow-async/batch-input/{RUN_ID}/job-{number:05d}/",
        output_uri=f"s3://novaflow-async/batch-output/{RUN_ID}/job-{number:05d}",
    )


@dataclass
class Harness:
    """Clock, scripted service, ledger and collect of one scenario."""

    root: Path
    settings: BatchInferenceSettings = field(default_factory=BatchInferenceSettings)
    clock: SimulatedClock = field(default_factory=SimulatedClock)
    collected: list[tuple[BatchJob, BatchJobState]] = field(default_factory=list)
    progress: list[tuple[int, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = CheckpointStore(str(self.root))
        self.service = ScriptedBatchService(self.clock)

    def ledger(self) -> BatchLedger:
        """A fresh ledger object over the store, as a restarted process reads it."""
        return BatchLedger(self.store, RUN_ID)

    def collect(self, job: BatchJob, state: BatchJobState) -> BatchJob:
        self.collected.append((job, state))
        return replace(job, embedded=job.records - 1, quarantined=1)

    def runner(self) -> BatchJobRunner:
        """A new runner, as a (re)started stage makes one."""
        return BatchJobRunner(
            self.ledger(),
            self.service,
            self.settings,
            lambda job: {"clientRequestToken": job.token, "jobName": job.name},
            self.collect,
            clock=self.clock,
            seed=7,
            progress=lambda done, total: self.progress.append((done, total)),
        )

    def run(self, jobs: list[BatchJob]) -> tuple[BatchJobRunner, list[BatchJob]]:
        """Record each job and hand it to a new runner, as the stage does; run to the end."""
        runner = self.runner()
        ledger = self.ledger()
        for job in jobs:
            runner.add(ledger.record(job))
        return runner, runner.run()


def test_every_job_is_created_once_and_collected_once_whatever_way_it_ends(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    durations = random.Random(1)
    jobs = [job_numbered(n) for n in range(1, 11)]
    for job in jobs:
        status = ENDED_STATUSES[job.number % len(ENDED_STATUSES)]
        harness.service.scripts[job.token] = JobScript(
            durations.uniform(300, 20_000), status, f"the job ended {status}"
        )

    runner, finished = harness.run(jobs)

    assert [call.subject for call in harness.service.create_calls] == [j.token for j in jobs]
    assert runner.created == 10
    assert runner.resumed == 0
    assert [job.number for job, _ in sorted(harness.collected, key=lambda c: c[0].number)] == list(
        range(1, 11)
    )
    ledger = harness.ledger().jobs()
    assert ledger == finished
    for job in ledger:
        script = harness.service.scripts[job.token]
        calls = harness.service.calls_about(job.token)
        assert job.status == "collected"
        assert job.job_arn == arn_for(job.token)
        assert (job.service_status, job.message) == (script.status, script.message)
        assert job.created_at is not None
        assert job.ended_at == job.created_at + script.seconds
        assert job.status_calls == len(calls)
        assert calls[-1].answer == script.status
        assert (job.embedded, job.quarantined) == (job.records - 1, 1)
    assert runner.status_calls == len(harness.service.status_calls)
    assert harness.progress == [(n, 10) for n in range(1, 11)]


def test_no_more_than_max_jobs_in_flight_are_created_and_not_yet_ended(tmp_path: Path) -> None:
    harness = Harness(tmp_path, BatchInferenceSettings(max_jobs_in_flight=3))
    durations = random.Random(2)
    jobs = [job_numbered(n) for n in range(1, 9)]
    for job in jobs:
        harness.service.scripts[job.token] = JobScript(durations.uniform(120, 7_200))

    _, finished = harness.run(jobs)

    assert max(harness.service.in_flight_after_create) == 3
    assert len(harness.service.create_calls) == 8
    assert all(job.status == "collected" for job in finished)


@pytest.mark.parametrize(
    "code",
    [
        "ThrottlingException",
        "ServiceQuotaExceededException",
        "InternalServerException",
        "ServiceUnavailableException",
    ],
)
def test_a_creation_refused_for_now_backs_off_and_is_tried_again_with_the_same_token(
    tmp_path: Path, code: str
) -> None:
    harness = Harness(tmp_path, BatchInferenceSettings(poll_jitter=0.2, poll_max_seconds=900))
    harness.service.refuse_create = lambda n, _: (
        client_error(code, "Too many jobs in progress", "CreateModelInvocationJob")
        if n <= 4
        else None
    )
    job = job_numbered(1)
    start = harness.clock.now()

    _, [finished] = harness.run([job])

    calls = harness.service.create_calls
    assert [call.answer for call in calls] == [code] * 4 + ["created"]
    assert {call.subject for call in calls} == {job.token}
    assert len(harness.service.jobs) == 1
    gaps = gaps_between([call.at for call in calls])
    for attempt, gap in enumerate(gaps):
        nominal = CREATE_RETRY_FIRST_SECONDS * 2**attempt
        assert nominal * 0.8 <= gap <= nominal
    assert calls[0].at == start
    assert finished.status == "collected"
    assert finished.job_arn == arn_for(job.token)


def test_creation_backs_off_no_longer_than_the_longest_poll_interval(tmp_path: Path) -> None:
    harness = Harness(tmp_path, BatchInferenceSettings(poll_jitter=0.0, poll_max_seconds=30))
    harness.service.refuse_create = lambda n, _: (
        throttled("CreateModelInvocationJob") if n <= 6 else None
    )

    harness.run([job_numbered(1)])

    gaps = gaps_between([call.at for call in harness.service.create_calls])
    assert gaps == [5.0, 10.0, 20.0, 30.0, 30.0, 30.0]


@pytest.mark.parametrize("code", ["ValidationException", "AccessDeniedException"])
def test_a_creation_refused_for_good_stops_the_run_and_leaves_the_job_recorded(
    tmp_path: Path, code: str
) -> None:
    harness = Harness(tmp_path)
    harness.service.refuse_create = lambda *_: client_error(
        code, "The role cannot be assumed", "CreateModelInvocationJob"
    )

    with pytest.raises(ClientError) as raised:
        harness.run([job_numbered(1)])

    assert raised.value.response["Error"]["Code"] == code
    assert len(harness.service.create_calls) == 1
    [job] = harness.ledger().jobs()
    assert (job.status, job.job_arn) == ("recorded", "")


def test_a_job_is_in_the_ledger_with_its_arn_before_it_is_first_polled(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    seen: list[tuple[str, str]] = []

    def look_at_the_ledger(job_arn: str) -> None:
        if not seen:
            [job] = harness.ledger().jobs()
            seen.append((job.status, job.job_arn))

    harness.service.on_status = look_at_the_ledger
    job = job_numbered(1)

    harness.run([job])

    assert seen == [("created", arn_for(job.token))]


def test_status_calls_follow_the_capped_backoff_schedule(tmp_path: Path) -> None:
    settings = BatchInferenceSettings(
        poll_initial_seconds=60, poll_multiplier=1.5, poll_max_seconds=900, poll_jitter=0.2
    )
    harness = Harness(tmp_path, settings)
    job = job_numbered(1)
    harness.service.scripts[job.token] = JobScript(seconds=6 * 3600)

    harness.run([job])

    schedule = PollSchedule(60, 1.5, 900, 0.2)
    [created] = harness.service.create_calls
    times = [created.at] + [call.at for call in harness.service.calls_about(job.token)]
    gaps = gaps_between(times)
    assert len(gaps) > 12
    for polls, gap in enumerate(gaps):
        nominal = schedule.nominal(polls)
        assert nominal * 0.8 - 1e-6 <= gap <= nominal + 1e-6
    assert max(gaps) <= 900 + 1e-6
    assert gaps[-2] > 900 * 0.8 - 1e-6


def test_a_throttled_status_call_is_counted_and_asked_again_later(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.service.refuse_status = lambda n, _: (
        throttled("GetModelInvocationJob") if n % 3 == 0 else None
    )
    jobs = [job_numbered(n) for n in range(1, 5)]

    runner, finished = harness.run(jobs)

    calls = harness.service.status_calls
    refused = sum(call.answer == "ThrottlingException" for call in calls)
    assert refused > 0
    assert runner.throttled_status_calls == refused
    assert runner.status_calls == len(calls) - refused
    for job in finished:
        about = harness.service.calls_about(job.token)
        assert job.status == "collected"
        assert job.throttled_calls == sum(call.answer == "ThrottlingException" for call in about)
        assert job.status_calls == len(about) - job.throttled_calls


def test_a_throttled_status_call_slows_the_status_calls_of_every_job_down(
    tmp_path: Path,
) -> None:
    # Twelve jobs created together, polled at the same moments without jitter: the pacer spaces
    # their status calls by 1 / status_calls_per_second, until one is throttled.
    settings = BatchInferenceSettings(
        max_jobs_in_flight=12, poll_jitter=0.0, status_calls_per_second=1.0
    )
    harness = Harness(tmp_path, settings)
    harness.service.refuse_status = lambda n, _: (
        throttled("GetModelInvocationJob") if n == 6 else None
    )

    harness.run([job_numbered(n) for n in range(1, 13)])

    first_round = [call.at for call in harness.service.status_calls[:12]]
    gaps = gaps_between(first_round)
    assert gaps[:5] == pytest.approx([1.0] * 5)
    assert gaps[5] == pytest.approx(2.0)
    assert min(gaps[5:]) > 1.5  # the rate wins back only a step per accepted call


def test_a_status_call_that_cannot_connect_is_counted_and_asked_again_later(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    harness.service.refuse_status = lambda n, _: (
        EndpointConnectionError(endpoint_url="https://bedrock.us-east-1.amazonaws.com")
        if n == 1
        else None
    )

    runner, [job] = harness.run([job_numbered(1)])

    assert runner.throttled_status_calls == 1
    assert (job.status, job.throttled_calls) == ("collected", 1)


@pytest.mark.parametrize("code", ["ResourceNotFoundException", "ValidationException"])
def test_a_job_the_service_no_longer_knows_is_collected_as_failed(
    tmp_path: Path, code: str
) -> None:
    harness = Harness(tmp_path)
    harness.service.refuse_status = lambda *_: client_error(
        code, "Could not find the model invocation job.", "GetModelInvocationJob"
    )

    runner, [job] = harness.run([job_numbered(1)])

    [(_, state)] = harness.collected
    assert state.status == "Failed"
    assert state.ended
    assert "Could not find the model invocation job." in state.message
    assert (job.status, job.service_status) == ("collected", "Failed")
    assert job.message == state.message
    assert job.ended_at is not None
    assert runner.throttled_status_calls == 0


def test_a_status_call_refused_for_good_stops_the_run(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.service.refuse_status = lambda *_: client_error(
        "AccessDeniedException", "not allowed", "GetModelInvocationJob"
    )

    with pytest.raises(ClientError, match="not allowed"):
        harness.run([job_numbered(1)])

    assert harness.collected == []
    assert harness.ledger().jobs()[0].status == "created"


def test_a_restarted_run_polls_its_created_jobs_and_never_creates_them_again(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    harness.service.refuse_status = lambda n, _: SimulatedKill("killed") if n == 1 else None
    jobs = [job_numbered(n) for n in range(1, 4)]
    with pytest.raises(SimulatedKill):
        harness.run(jobs)
    assert [job.status for job in harness.ledger().jobs()] == ["created"] * 3

    restarted = harness.runner()
    for job in harness.ledger().jobs():
        restarted.add(job)
    finished = restarted.run()

    assert [call.subject for call in harness.service.create_calls] == [j.token for j in jobs]
    assert (restarted.created, restarted.resumed) == (0, 3)
    assert [job.status for job in finished] == ["collected"] * 3
    assert sorted(job.number for job, _ in harness.collected) == [1, 2, 3]


def test_a_job_recorded_but_not_heard_created_is_created_again_with_its_token(
    tmp_path: Path,
) -> None:
    harness = Harness(tmp_path)
    # The service makes the job, then the process dies before it hears the ARN.
    harness.service.refuse_create = lambda n, _: SimulatedKill("killed") if n == 1 else None
    job = job_numbered(1)
    with pytest.raises(SimulatedKill):
        harness.run([job])
    [left] = harness.ledger().jobs()
    assert (left.status, left.job_arn) == ("recorded", "")

    restarted = harness.runner()
    restarted.add(left)
    [finished] = restarted.run()

    assert [call.subject for call in harness.service.create_calls] == [job.token] * 2
    assert len(harness.service.jobs) == 1
    assert finished.job_arn == arn_for(job.token)
    assert finished.status == "collected"
    assert (restarted.created, restarted.resumed) == (1, 0)


def test_a_collected_job_is_left_alone_by_a_restarted_run(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.run([job_numbered(1)])
    calls = (len(harness.service.create_calls), len(harness.service.status_calls))

    restarted = harness.runner()
    for job in harness.ledger().jobs():
        restarted.add(job)
    finished = restarted.run()

    assert (len(harness.service.create_calls), len(harness.service.status_calls)) == calls
    assert [job.status for job in finished] == ["collected"]
    assert (restarted.created, restarted.resumed) == (0, 0)
    assert len(harness.collected) == 1
