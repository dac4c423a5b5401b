"""Running a run's async embedding jobs: bounded submission, retry-aware polling, resume.

``AsyncJobRunner.run`` takes the run's async units to an end each — ``collected`` (its segments
checkpointed) or ``quarantined`` with a reason — from one thread, however many jobs there are:

- **Submission** keeps at most ``max_jobs_in_flight`` jobs running; each is written to the
  ledger with its deterministic token before StartAsyncInvoke is called and with its ARN after.
  A throttled or quota-refused submission waits (backing off) and is tried again; a refused
  input (ValidationException and the like) is quarantined with the service's message.
- **Polling** asks GetAsyncInvoke about each running job on its own exponential schedule
  (``PollSchedule``: capped, with jitter that only shortens an interval, so a job is noticed at
  most one interval after it ends), through one pacer for all status calls. A throttled status
  call halves that pacer's rate and puts the job's next poll one interval later: the poller
  slows down, it does not fail. A job still running at its deadline is quarantined.
- **Ends**: a ``Completed`` job is handed to ``collect``; a ``Failed`` one (or one whose output
  cannot be read) is submitted again as a new attempt with a new token, up to ``max_attempts``,
  then quarantined with the service's last message.

A restarted run rebuilds all of this from the ledger: running jobs are polled at once, jobs
caught between ledger and submission are resubmitted with their recorded token (Bedrock answers
a repeated token with the job it already has), ended ones are left alone. Everything that waits
goes through ``Clock``, so tests and the benchmark run the same code on simulated time.

Hand-rolled because no maintained library schedules many long-running cloud jobs against one
rate budget: botocore has no waiter for Bedrock async invokes, and a waiter per job would be a
thread and a fixed delay per job.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from tasks.job_ledger import ENDED_STATUSES, JobLedger, JobRecord
from tasks.jobs.service import JobService, JobState
from tasks.outcomes import AsyncOutcome
from tasks.polling import Clock, Poller
from tasks.records import Unit
from tasks.service_errors import SERVER_CODES, THROTTLING_CODES, error_code, error_message
from tasks.settings import AsyncJobSettings

logger = logging.getLogger(__name__)

SUBMIT_RETRY_FIRST_SECONDS = 1.0


class CollectError(RuntimeError):
    """A completed job's output could not be read (missing, malformed): the attempt failed."""


@dataclass(frozen=True)
class Collected:
    """What collecting a completed job checkpointed: segments embedded and quarantined."""

    embedded: int
    quarantined: int


@dataclass(frozen=True)
class Submission:
    """A job ready to go: the input it reads and the StartAsyncInvoke arguments."""

    input_uri: str
    output_uri: str
    token: str
    arguments: Mapping[str, Any]


class InputRefusedError(RuntimeError):
    """A unit that cannot be submitted through its own fault; ``code`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


Prepare = Callable[[Unit, int], Submission]
Collect = Callable[[Unit, JobRecord, str], Collected]
Quarantine = Callable[[Unit, JobRecord], None]


class AsyncJobRunner:
    """Takes async units to an end, recording every step in the ledger (see the module doc).

    ``prepare(unit, attempt)`` stages the input and builds the request (``InputRefusedError`` for
    bad input); ``collect(unit, record, output_folder)`` checkpoints a completed job's segments
    (``CollectError`` when its output is unreadable); ``quarantine(unit, record)`` writes the
    unit's failure. ``progress`` hears the counts whenever a job ends.
    """

    def __init__(
        self,
        ledger: JobLedger,
        service: JobService,
        settings: AsyncJobSettings,
        prepare: Prepare,
        collect: Collect,
        quarantine: Quarantine,
        clock: Clock | None = None,
        seed: int = 0,
        progress: Callable[[AsyncOutcome, int, int], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._service = service
        self._settings = settings
        self._prepare = prepare
        self._collect = collect
        self._quarantine = quarantine
        self._poller: Poller[str] = Poller(
            settings, settings.status_calls_per_second, SUBMIT_RETRY_FIRST_SECONDS, clock, seed
        )
        self._clock = self._poller.clock
        self._progress = progress
        self._queue: deque[tuple[Unit, int]] = deque()
        self._running: dict[str, Unit] = {}
        self._counts = AsyncOutcome()

    # -- the loop ------------------------------------------------------------------------------

    def run(self, units: Iterable[Unit]) -> AsyncOutcome:
        """Take every unit to an end; returns the counts (the ledger holds the detail)."""
        units = list(units)
        for unit in units:
            self._resume(unit, self._ledger.latest(unit.key))
        self._counts = replace(self._counts, jobs=len(units))
        while self._queue or self._running:
            self._submit_what_fits()
            self._poll_what_is_due()
            room = len(self._running) < self._settings.max_jobs_in_flight
            self._poller.sleep_until(self._poller.next_wake(bool(self._queue) and room))
        self._ledger.compact()
        return self._counts

    def _resume(self, unit: Unit, record: JobRecord | None) -> None:
        if record is None:
            self._queue.append((unit, 1))
        elif record.status == "submitting":
            self._queue.appendleft((unit, record.attempt))  # same token: Bedrock dedups it
        elif record.status == "running":
            self._counts = replace(self._counts, resumed=self._counts.resumed + 1)
            self._running[unit.key] = unit
            self._poller.ask_at(unit.key, self._clock.now())
        elif record.status == "failed":
            self._after_failure(unit, record)
        else:
            self._count_end(record)

    # -- submission ----------------------------------------------------------------------------

    def _submit_what_fits(self) -> None:
        room = self._settings.max_jobs_in_flight - len(self._running)
        if room <= 0 or not self._queue or not self._poller.may_submit():
            return
        batch: list[tuple[Unit, int, Submission]] = []
        while self._queue and len(batch) < room:
            unit, attempt = self._queue.popleft()
            try:
                submission = self._prepare(unit, attempt)
            except InputRefusedError as refused:
                earlier = self._ledger.latest(unit.key)
                self._end_quarantined(unit, attempt, refused.code, str(refused), earlier)
                continue
            batch.append((unit, attempt, submission))
        # The intent first, in one ledger write for the batch: a crash after this point is
        # resumed by resubmitting these very tokens.
        intents = self._ledger.record(
            JobRecord(
                unit_key=unit.key,
                item_id=unit.item_id,
                uri=unit.uri,
                attempt=attempt,
                token=submission.token,
                status="submitting",
                input_uri=submission.input_uri,
                output_uri=submission.output_uri,
            )
            for unit, attempt, submission in batch
        )
        started: list[JobRecord] = []
        for position, ((unit, _, submission), intent) in enumerate(
            zip(batch, intents, strict=True)
        ):
            try:
                arn = self._service.start(submission.arguments)
            except ClientError as err:
                code = _error_code(err)
                if code in THROTTLING_CODES or code in SERVER_CODES:
                    # Back-pressure: this one and the rest of the batch wait and go again.
                    for later_unit, later_attempt, _ in reversed(batch[position:]):
                        self._queue.appendleft((later_unit, later_attempt))
                    self._poller.back_off_submission(code)
                    break
                self._end_quarantined(unit, intent.attempt, code, _error_message(err), intent)
                continue
            now = self._clock.now()
            started.append(replace(intent, status="running", invocation_arn=arn, submitted_at=now))
            self._running[unit.key] = unit
            self._poller.ask_at(unit.key, now + self._poller.interval(0))
            self._counts = replace(
                self._counts,
                submissions=self._counts.submissions + 1,
                resubmissions=self._counts.resubmissions + (intent.attempt > 1),
            )
        else:
            self._poller.submission_accepted()
        self._ledger.record(started)

    # -- polling -------------------------------------------------------------------------------

    def _poll_what_is_due(self) -> None:
        for unit_key in self._poller.due():
            if unit_key in self._running:
                self._poll(self._running[unit_key])

    def _poll(self, unit: Unit) -> None:
        record = self._ledger.latest(unit.key)
        assert record is not None
        assert record.invocation_arn is not None
        self._poller.pacer.acquire()
        now = self._clock.now()
        try:
            state = self._service.state(record.invocation_arn)
        except ClientError as err:
            code = _error_code(err)
            if code == "ValidationException":  # the service does not know this job (any more)
                self._attempt_failed(unit, record, "job_lost", _error_message(err))
            elif code in THROTTLING_CODES or code in SERVER_CODES:
                self._status_refused(unit, record, code, now)
            else:
                raise  # credentials or permissions: no amount of waiting mends them
            return
        except (BotocoreConnectionError, HTTPClientError) as err:
            self._status_refused(unit, record, type(err).__name__, now)
            return
        self._poller.pacer.record_success()
        self._counts = replace(self._counts, status_calls=self._counts.status_calls + 1)
        record = replace(record, status_calls=record.status_calls + 1)
        if state.status == "InProgress":
            self._still_running(unit, record, now)
        elif state.status == "Completed":
            self._completed(unit, replace(record, ended_at=state.ended_at, noticed_at=now), state)
        else:
            message = state.failure_message or "the job failed without a message"
            ended = replace(record, ended_at=state.ended_at, noticed_at=now)
            self._attempt_failed(unit, ended, "job_failed", message)

    def _status_refused(self, unit: Unit, record: JobRecord, code: str, now: float) -> None:
        """A throttled or failed status call: the poller slows down and asks later, up to the
        job's deadline."""
        self._poller.pacer.slow_down()
        self._counts = replace(
            self._counts, throttled_status_calls=self._counts.throttled_status_calls + 1
        )
        record = replace(record, throttled_calls=record.throttled_calls + 1)
        if self._past_deadline(unit, record, now):
            return
        self._ledger.remember_unwritten(record)  # counters only: not worth a write of their own
        interval = self._poller.interval(record.status_calls)
        self._poller.ask_at(unit.key, min(now + interval, self._deadline(record, now)))
        logger.debug(
            "status of %s refused with %s; asking again in %.1f s", unit.key, code, interval
        )

    def _deadline(self, record: JobRecord, now: float) -> float:
        return (record.submitted_at or now) + self._settings.job_deadline_seconds

    def _past_deadline(self, unit: Unit, record: JobRecord, now: float) -> bool:
        """Quarantine the job if its deadline has passed; says whether it did."""
        if now < self._deadline(record, now):
            return False
        message = (
            f"still running {self._settings.job_deadline_seconds:.0f} s after submission "
            f"({record.invocation_arn}); raise NOVAFLOW_ASYNC_JOBS__JOB_DEADLINE_SECONDS "
            "if such jobs are expected"
        )
        self._end_quarantined(unit, record.attempt, "job_deadline", message, record)
        return True

    def _still_running(self, unit: Unit, record: JobRecord, now: float) -> None:
        if self._past_deadline(unit, record, now):
            return
        self._ledger.remember_unwritten(record)  # counters only: not worth a write of their own
        interval = self._poller.interval(record.status_calls)
        self._poller.ask_at(unit.key, min(now + interval, self._deadline(record, now)))

    def _completed(self, unit: Unit, record: JobRecord, state: JobState) -> None:
        try:
            collected = self._collect(unit, record, state.output_folder)
        except CollectError as err:
            self._attempt_failed(unit, record, "output_unreadable", str(err))
            return
        del self._running[unit.key]
        done = replace(
            record,
            status="collected",
            segments_embedded=collected.embedded,
            segments_quarantined=collected.quarantined,
        )
        self._ledger.record([done])
        self._count_end(done)

    def _attempt_failed(self, unit: Unit, record: JobRecord, code: str, message: str) -> None:
        self._running.pop(unit.key, None)
        (failed,) = self._ledger.record(
            [replace(record, status="failed", code=code, message=message)]
        )
        logger.info("job for %s failed (attempt %d): %s", unit.key, record.attempt, message)
        self._after_failure(unit, failed)

    def _after_failure(self, unit: Unit, record: JobRecord) -> None:
        if record.attempt < self._settings.max_attempts:
            self._queue.append((unit, record.attempt + 1))
            return
        message = f"failed {record.attempt} time(s); last: {record.message}"
        code = "job_failed" if record.code in ("job_failed", "job_lost") else record.code
        self._end_quarantined(unit, record.attempt, code, message, record)

    # -- ends ----------------------------------------------------------------------------------

    def _end_quarantined(
        self, unit: Unit, attempt: int, code: str, message: str, record: JobRecord | None
    ) -> None:
        self._running.pop(unit.key, None)
        if record is None or record.attempt != attempt:
            record = JobRecord(unit.key, unit.item_id, unit.uri, attempt, "", "quarantined")
        ended = replace(record, status="quarantined", code=code, message=message)
        # The failure is written before the ledger says so: a crash in between is resumed from
        # the earlier record and ends the same way, never with a quarantine on record only.
        self._quarantine(unit, ended)
        (ended,) = self._ledger.record([ended])
        self._count_end(ended)

    def _count_end(self, record: JobRecord) -> None:
        counts = self._counts
        if record.status == "collected":
            counts = replace(
                counts,
                collected=counts.collected + 1,
                segments_embedded=counts.segments_embedded + record.segments_embedded,
                segments_quarantined=counts.segments_quarantined + record.segments_quarantined,
            )
        elif record.status in ENDED_STATUSES:
            counts = replace(counts, quarantined=counts.quarantined + 1)
        self._counts = counts
        if self._progress is not None:
            self._progress(counts, len(self._running), len(self._queue))


def _error_code(err: ClientError) -> str:
    return error_code(err) or "ClientError"


def _error_message(err: ClientError) -> str:
    return error_message(err)
