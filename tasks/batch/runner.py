"""Taking a run's batch inference jobs to an end: bounded creation, retry-aware polling, resume.

``BatchJobRunner`` holds the jobs of one run. Each is ``recorded`` in the ledger (its inputs
written, its token fixed) before CreateModelInvocationJob is called, and ``created`` with its ARN
after; at most ``max_jobs_in_flight`` are created and not yet ended. A throttled or
quota-refused creation (``ServiceQuotaExceededException``: too many jobs in progress) waits,
backing off, and is tried again with the same token. Each created job is polled on its own
capped exponential schedule with jitter (the async jobs' ``PollSchedule``), through one pacer
for every status call; a throttled status call slows that pacer down and asks later. A job the
service ended — completed, partially completed, failed, stopped or expired — is handed to
``collect``, which checkpoints its shards and says how it went; it is then ``collected``.

A run restarted with the same id hands the runner its ledger: created jobs are polled at once,
recorded ones created again with their token (Bedrock answers a repeated token with the job it
already has), collected ones are left alone. Everything that waits goes through ``Clock``.
Hand-rolled for the reason the async runner is: no maintained library polls many long cloud
jobs against one rate budget.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotocoreConnectionError

from tasks.batch.ledger import BatchJob, BatchLedger
from tasks.batch.service import BatchJobState, BatchService
from tasks.polling import Clock, Poller
from tasks.service_errors import SERVER_CODES, THROTTLING_CODES, error_code, error_message
from tasks.settings import BatchInferenceSettings

logger = logging.getLogger(__name__)

CREATE_RETRY_FIRST_SECONDS = 5.0
LOST_JOB_CODES = frozenset({"ResourceNotFoundException", "ValidationException"})

CreateArguments = Callable[[BatchJob], Mapping[str, Any]]
Collect = Callable[[BatchJob, BatchJobState], BatchJob]


class BatchJobRunner:
    """Creates, polls and collects the jobs of one run (see the module docstring).

    ``arguments(job)`` gives CreateModelInvocationJob's arguments for a recorded job;
    ``collect(job, state)`` checkpoints an ended job's shards and returns the job with its
    counts; ``progress(collected, jobs)`` hears whenever a job is collected."""

    def __init__(
        self,
        ledger: BatchLedger,
        service: BatchService,
        settings: BatchInferenceSettings,
        arguments: CreateArguments,
        collect: Collect,
        clock: Clock | None = None,
        seed: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self._ledger = ledger
        self._service = service
        self._settings = settings
        self._arguments = arguments
        self._collect = collect
        self._poller: Poller[int] = Poller(
            settings, settings.status_calls_per_second, CREATE_RETRY_FIRST_SECONDS, clock, seed
        )
        self._clock = self._poller.clock
        self._progress = progress
        self._jobs: dict[int, BatchJob] = {}
        self._to_create: deque[int] = deque()
        self._running: set[int] = set()
        self.created = self.resumed = self.status_calls = self.throttled_status_calls = 0

    @property
    def jobs(self) -> list[BatchJob]:
        """Every job the runner holds, as it stands, in number order."""
        return [self._jobs[number] for number in sorted(self._jobs)]

    def add(self, job: BatchJob) -> None:
        """Take ``job`` on as the ledger has it, and create what fits now."""
        self._jobs[job.number] = job
        if job.status == "recorded":
            self._to_create.append(job.number)
        elif job.status == "created":
            self.resumed += 1
            self._running.add(job.number)
            self._poller.ask_at(job.number, self._clock.now())
        self._create_what_fits()

    def run(self) -> list[BatchJob]:
        """Wait for every job to end and be collected; returns them all."""
        while self._to_create or self._running:
            self._create_what_fits()
            self._poll_what_is_due()
            room = len(self._running) < self._settings.max_jobs_in_flight
            self._poller.sleep_until(self._poller.next_wake(bool(self._to_create) and room))
        return self.jobs

    # -- creation ------------------------------------------------------------------------------

    def _create_what_fits(self) -> None:
        while (
            self._to_create
            and len(self._running) < self._settings.max_jobs_in_flight
            and self._poller.may_submit()
        ):
            job = self._jobs[self._to_create[0]]
            try:
                arn = self._service.create(self._arguments(job))
            except ClientError as err:
                code = error_code(err)
                if code in THROTTLING_CODES or code in SERVER_CODES:
                    self._poller.back_off_submission(code)
                    return
                raise  # a refused request is the run's configuration (role, buckets, model)
            self._to_create.popleft()
            now = self._clock.now()
            job = self._ledger.record(replace(job, status="created", job_arn=arn, created_at=now))
            self._jobs[job.number] = job
            self._running.add(job.number)
            self.created += 1
            self._poller.submission_accepted()
            self._poller.ask_at(job.number, now + self._poller.interval(0))
            logger.info("batch job %d created: %s (%d records)", job.number, arn, job.records)

    # -- polling -------------------------------------------------------------------------------

    def _poll_what_is_due(self) -> None:
        for number in self._poller.due():
            if number in self._running:
                self._poll(self._jobs[number])

    def _poll(self, job: BatchJob) -> None:
        self._poller.pacer.acquire()
        now = self._clock.now()
        try:
            state = self._service.state(job.job_arn)
        except ClientError as err:
            code = error_code(err)
            if code in LOST_JOB_CODES:  # the service does not know this job (any more)
                state = BatchJobState("Failed", f"the job is gone: {error_message(err)}")
            elif code in THROTTLING_CODES or code in SERVER_CODES:
                self._status_refused(job, code, now)
                return
            else:
                raise  # credentials or permissions: no amount of waiting mends them
        except (BotocoreConnectionError, HTTPClientError) as err:
            self._status_refused(job, type(err).__name__, now)
            return
        self._poller.pacer.record_success()
        self.status_calls += 1
        job = replace(job, status_calls=job.status_calls + 1, service_status=state.status)
        self._jobs[job.number] = job
        if not state.ended:
            self._poller.ask_at(job.number, now + self._poller.interval(job.status_calls))
            return
        ended = replace(job, message=state.message, ended_at=state.ended_at or now)
        logger.info("batch job %d ended %s %s", job.number, state.status, state.message)
        collected = self._ledger.record(replace(self._collect(ended, state), status="collected"))
        self._jobs[job.number] = collected
        self._running.discard(job.number)
        if self._progress is not None:
            done = sum(j.status == "collected" for j in self._jobs.values())
            self._progress(done, len(self._jobs))

    def _status_refused(self, job: BatchJob, code: str, now: float) -> None:
        self._poller.pacer.slow_down()
        self.throttled_status_calls += 1
        job = replace(job, throttled_calls=job.throttled_calls + 1)
        self._jobs[job.number] = job
        self._poller.ask_at(job.number, now + self._poller.interval(job.status_calls))
        logger.debug("status of batch job %d refused with %s", job.number, code)
