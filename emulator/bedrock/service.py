"""The Bedrock control plane stand-in for batch inference: service logic without HTTP.

:class:`BatchInferenceService` answers CreateModelInvocationJob, GetModelInvocationJob,
ListModelInvocationJobs and StopModelInvocationJob for Nova Multimodal Embeddings. Create checks
the request's members (:mod:`.control_api`) and the model, and records the job ``Submitted``;
everything about the input is checked later, while the job is ``Validating`` (:mod:`.records`),
and a problem there ends the job ``Failed`` with a ``message``. Each record is run through
``invoke_model``, the stand-in's own InvokeModel, while the job is ``InProgress``
(:mod:`.output`).

Jobs move on the service's clock (:func:`.jobs.next_step`): a background thread moves jobs
whose time has come, and every operation first does the same, under one lock, so a caller who
reads a job after its time has come sees it moved, output written.

Choices where AWS is silent (⚠):

* A ``clientRequestToken`` used before returns the earlier job's ARN, whatever the rest of the
  request: "If this token matches a previous request, Amazon Bedrock ignores the request, but
  does not return an error" (the service model). Tokens never expire.
* A model identifier other than Nova Multimodal Embeddings' ID, or its foundation-model ARN in
  the stand-in's Region, is ``ValidationException: The provided model identifier is invalid.``,
  as InvokeModel answers; ``modelInvocationType`` ``Converse`` is a ``ValidationException``: the
  model has no Converse API.
* Job names need not be unique. ``modelId`` is reported as given; ``s3InputFormat`` and
  ``modelInvocationType`` only when given. The four record counts are always reported: 0 until
  known, ``totalRecordCount`` from ``Scheduled`` on, the others once the job has written its
  results.
* Get or Stop of a well-formed identifier that names no job (or another Region's or account's)
  is ``ResourceNotFoundException``. Stopping a ``Stopping`` job succeeds; stopping an ended one
  is ``ConflictException``.
* A job stopped ``InProgress`` writes the records it had reached by the stop (in proportion to
  the time it ran) and its manifest; one stopped earlier writes nothing.
* The misbehaviour ``failure_rate`` fails a job at the end of its run, writing nothing; the
  ``partial_rate`` leaves a seeded share of records unreached, as a job cut off by its timeout
  does, and ends it ``PartiallyCompleted``. Draws use the seed and the job's token.
"""

from __future__ import annotations

import logging
import math
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from emulator.bedrock import control_api
from emulator.bedrock.control_api import bedrock_control_error
from emulator.bedrock.jobs import (
    COMPLETED,
    EXPIRED,
    FAILED,
    IN_PROGRESS,
    PARTIALLY_COMPLETED,
    SCHEDULED,
    STATE_SUBDIRECTORY,
    STOPPABLE,
    STOPPED,
    STOPPING,
    SUBMITTED,
    VALIDATING,
    BatchJobRecord,
    BatchJobStore,
    next_step,
)
from emulator.bedrock.limits import BatchLimits
from emulator.bedrock.output import InvokeModel, write_results
from emulator.bedrock.records import InvalidInputError, JobInput, load_input
from emulator.bedrock.storage import BatchStorage
from emulator.misbehaviour import BatchJobBehaviour, seeded_fraction
from emulator.nova.runtime_api import NOVA_MODEL_ID, check_model_id
from emulator.objects import ObjectNotFoundError

JOB_FAILURE_MESSAGE = "The batch inference job failed because of an internal error."
TIMED_OUT_RECORD = "The job timed out before this record was processed."
STOPPED_RECORD = "The job was stopped before this record was processed."
POLL_SECONDS = 0.5
_JOB_ID_ALPHABET = string.ascii_lowercase + string.digits
_JOB_ID_LENGTH = 12
_CLOSE_TIMEOUT_SECONDS = 60.0

_log = logging.getLogger(__name__)


class BatchInferenceService:
    """Batch inference operations for the Nova embeddings model. Thread-safe.

    ``storage`` is the S3 jobs read their input from and write their output to;
    ``invoke_model`` answers one record's InvokeModel body (raising the ServiceError InvokeModel
    would). ``behaviour`` and ``limits`` are asked at each submission; ``clock`` gives epoch
    seconds. A background thread moves jobs on until :meth:`close` unless ``run_in_background``
    is False.
    """

    def __init__(
        self,
        storage: BatchStorage,
        invoke_model: InvokeModel,
        *,
        state_dir: Path | None,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        behaviour: Callable[[], BatchJobBehaviour] = BatchJobBehaviour,
        limits: Callable[[], BatchLimits] = BatchLimits,
        clock: Callable[[], float] = time.time,
        run_in_background: bool = True,
    ) -> None:
        self._storage = storage
        self._invoke_model = invoke_model
        self._region = region
        self._account_id = account_id
        self._behaviour = behaviour
        self._limits = limits
        self._clock = clock
        self._lock = threading.RLock()
        self._jobs = BatchJobStore(None if state_dir is None else state_dir / STATE_SUBDIRECTORY)
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if run_in_background:
            self._thread = threading.Thread(target=self._loop, name="batch-jobs", daemon=True)
            self._thread.start()

    # -- operations ------------------------------------------------------------------------

    def create_job(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Check and record a job; the response is ``{"jobArn"}``. The job starts Submitted."""
        request = control_api.parse_create_job(body)
        check_model_id(request.model_id, self._region)
        if request.invocation_type == "Converse":
            raise bedrock_control_error(
                "ValidationException",
                f"The model {NOVA_MODEL_ID} does not support the Converse model invocation type.",
            )
        with self._lock:
            token = request.client_request_token or str(uuid.uuid4())
            earlier = self._jobs.with_token(token)
            if earlier is not None:
                return {"jobArn": earlier.job_arn}
            job_id = self._new_job_id()
            submitted = round(self._clock(), 3)
            record = BatchJobRecord(
                job_id=job_id,
                job_arn=control_api.job_arn(self._region, self._account_id, job_id),
                request=request,
                client_request_token=token,
                behaviour=self._behaviour(),
                limits=self._limits(),
                submit_time=submitted,
                status_time=submitted,
            )
            self._jobs.put(record)
        self._wake.set()
        return {"jobArn": record.job_arn}

    def get_job(self, identifier: str) -> dict[str, Any]:
        """The GetModelInvocationJob response for a job ID or ARN (URL-decoded)."""
        with self._lock:
            self.advance()
            return self._find(identifier).description()

    def list_jobs(self, query: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """One ListModelInvocationJobs page: ``invocationJobSummaries`` and maybe ``nextToken``.

        ``query`` holds the raw query-string values by parameter name.
        """
        listing = control_api.parse_list_query(query)
        with self._lock:
            self.advance()
            records = self._jobs.all()
        after, before = listing.submitted_after_ms, listing.submitted_before_ms
        chosen = [
            record
            for record in records
            if (listing.status is None or record.status == listing.status)
            and (listing.name_contains is None or listing.name_contains in record.request.job_name)
            and (after is None or _listing_key(record)[0] > after)
            and (before is None or _listing_key(record)[0] < before)
        ]
        chosen.sort(key=_listing_key, reverse=listing.descending)
        cursor = listing.after_cursor
        if cursor is not None:
            chosen = [
                record
                for record in chosen
                if (
                    _listing_key(record) < cursor
                    if listing.descending
                    else _listing_key(record) > cursor
                )
            ]
        page = chosen[: listing.max_results]
        response: dict[str, Any] = {"invocationJobSummaries": [r.description() for r in page]}
        if len(chosen) > len(page):
            response["nextToken"] = control_api.encode_next_token(_listing_key(page[-1]))
        return response

    def stop_job(self, identifier: str) -> dict[str, Any]:
        """Stop a job that has not ended: it is Stopping now and Stopped a phase later."""
        with self._lock:
            self.advance()
            record = self._find(identifier)
            if record.status == STOPPING:
                return {}
            if record.status not in STOPPABLE:
                raise bedrock_control_error(
                    "ConflictException",
                    f"The job {record.job_arn} is {record.status} and cannot be stopped.",
                )
            self._jobs.put(record.moved(STOPPING, self._clock(), stopped_from=record.status))
        self._wake.set()
        return {}

    def advance(self) -> int:
        """Move every job whose time has come, as far as the clock allows; returns how many steps.

        The background thread calls this; so does every operation, first.
        """
        steps = 0
        with self._lock:
            now = self._clock()
            for record in self._jobs.all():
                due = next_step(record)
                while due is not None and due <= now and not self._stopped.is_set():
                    record = self._step(record, due)
                    self._jobs.put(record)
                    steps += 1
                    due = next_step(record)
        return steps

    def close(self) -> None:
        """Stop the background thread (after the step it is taking, if any)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(_CLOSE_TIMEOUT_SECONDS)

    # -- moving jobs on ----------------------------------------------------------------------

    def _step(self, record: BatchJobRecord, at: float) -> BatchJobRecord:
        """``record`` after the transition planned for ``at``."""
        status = record.status
        if status == SUBMITTED:
            return record.moved(VALIDATING, at)
        if status == VALIDATING:
            try:
                job_input = self._load(record)
            except InvalidInputError as problem:
                return record.moved(FAILED, at, message=problem.message[:2048])
            return record.moved(SCHEDULED, at, total_records=job_input.record_count)
        if status == SCHEDULED:
            if at >= record.expiration_time:
                hours = record.timeout_hours
                message = f"The job did not start within its timeout of {hours} hours."
                return record.moved(EXPIRED, at, message=message)
            return record.moved(IN_PROGRESS, at, started_time=round(at, 3))
        if status == IN_PROGRESS:
            return self._finish(record, at)
        return self._finish_stop(record, at)

    def _finish(self, record: BatchJobRecord, at: float) -> BatchJobRecord:
        """The end of a run: on time, or cut off by the job's timeout."""
        behaviour, token = record.behaviour, record.client_request_token
        timed_out = at < record.status_time + record.run_seconds
        failing = seeded_fraction(behaviour.seed, token, "job-failure") < behaviour.failure_rate
        if failing and not timed_out:
            return record.moved(FAILED, at, message=JOB_FAILURE_MESSAGE)
        try:
            job_input = self._load(record)
        except InvalidInputError as problem:
            return record.moved(FAILED, at, message=problem.message[:2048])
        total = job_input.record_count
        if timed_out:
            not_reached = _tail(total, (at - record.status_time) / record.run_seconds)
        elif seeded_fraction(behaviour.seed, token, "partial") < behaviour.partial_rate:
            not_reached = _drawn(total, behaviour, token)
        else:
            not_reached = frozenset()
        return self._written(record, at, job_input, not_reached, TIMED_OUT_RECORD)

    def _finish_stop(self, record: BatchJobRecord, at: float) -> BatchJobRecord:
        """The end of a stop: a job stopped mid-run keeps what it had reached."""
        if record.stopped_from != IN_PROGRESS or record.started_time is None:
            return record.moved(STOPPED, at)
        try:
            job_input = self._load(record)
        except InvalidInputError:
            return record.moved(STOPPED, at)  # the user's stop stands; there is nothing to keep
        ran = (record.status_time - record.started_time) / max(record.run_seconds, 1e-9)
        not_reached = _tail(job_input.record_count, ran)
        return self._written(record, at, job_input, not_reached, STOPPED_RECORD)

    def _written(
        self,
        record: BatchJobRecord,
        at: float,
        job_input: JobInput,
        not_reached: frozenset[int],
        not_reached_message: str,
    ) -> BatchJobRecord:
        """Write the results; the record ended as they make it."""
        folder = f"{record.request.output_uri.rstrip('/')}/{record.job_id}"
        try:
            counts = write_results(
                job_input,
                not_reached,
                not_reached_message,
                self._invoke_model,
                self._storage,
                folder,
            )
        except ObjectNotFoundError:
            message = f"Unable to write the output to {folder}: the bucket does not exist."
            return record.moved(FAILED, at, message=message)
        changes: dict[str, Any] = {"counts": counts, "total_records": counts.total}
        if record.status == STOPPING:
            return record.moved(STOPPED, at, **changes)
        if not not_reached:
            return record.moved(COMPLETED, at, **changes)
        message = (
            f"The job timed out before all records were processed: {len(not_reached)} of "
            f"{counts.total} records were not processed."
        )
        return record.moved(PARTIALLY_COMPLETED, at, message=message, **changes)

    def _load(self, record: BatchJobRecord) -> JobInput:
        request = record.request
        return load_input(
            self._storage, request.input_uri, request.output_uri, record.limits, record.job_id
        )

    # -- helpers -----------------------------------------------------------------------------

    def _find(self, identifier: str) -> BatchJobRecord:
        record = self._jobs.get(control_api.job_id_of(identifier))
        if record is None or (identifier.startswith("arn:") and identifier != record.job_arn):
            raise bedrock_control_error(
                "ResourceNotFoundException",
                f"Could not find the model invocation job {identifier}.",
            )
        return record

    def _new_job_id(self) -> str:
        while True:
            job_id = "".join(secrets.choice(_JOB_ID_ALPHABET) for _ in range(_JOB_ID_LENGTH))
            if self._jobs.get(job_id) is None:
                return job_id

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self.advance()
            except Exception:  # the thread must outlive one bad pass; the next one retries
                _log.exception("batch job pass failed")
            delay = POLL_SECONDS
            with self._lock:
                upcoming = [t for t in map(next_step, self._jobs.all()) if t is not None]
            if upcoming:
                delay = min(delay, max(0.0, min(upcoming) - self._clock()))
            self._wake.wait(delay)
            self._wake.clear()


def _tail(total: int, share_done: float) -> frozenset[int]:
    """The positions past the first ``share_done`` of ``total`` records: those not reached."""
    reached = min(total, max(0, math.floor(total * share_done)))
    return frozenset(range(reached, total))


def _drawn(total: int, behaviour: BatchJobBehaviour, token: str) -> frozenset[int]:
    """The records a partial job leaves unreached: each by a seeded draw, at least one."""
    draws = [seeded_fraction(behaviour.seed, token, "record", index) for index in range(total)]
    chosen = {index for index, draw in enumerate(draws) if draw < behaviour.record_failure_rate}
    if not chosen and total:
        chosen = {min(range(total), key=draws.__getitem__)}
    return frozenset(chosen)


def _listing_key(record: BatchJobRecord) -> tuple[int, str]:
    """(submit time in epoch milliseconds, job ID): the listing order and page cursor."""
    return (round(record.submit_time * 1000), record.job_id)
