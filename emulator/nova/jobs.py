"""Async invocations: their records, where they are kept, and the thread that finishes them.

A job is recorded ``InProgress`` at submission with the time it is due to end on the runtime's
clock. One runner thread finishes due jobs in submission order; it sleeps until the next job is
due, is woken by each submission, and looks again at least every :data:`POLL_SECONDS` so that
an injected clock that jumps ahead is noticed. Tests drive :meth:`JobRunner.run_due_jobs`
themselves: it is the same method the thread calls, and calls never overlap.

With a state directory every record is one JSON file, ``<state_dir>/nova-async-invokes/
<job-id>.json``, replaced atomically on each change, so jobs survive a restart: a job still
``InProgress`` is finished by the next runtime once it is due (its output is rewritten whole,
so a job interrupted mid-write ends complete). One runtime at a time may use a state
directory.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from emulator.job_records import JobRecords
from emulator.misbehaviour import AsyncJobBehaviour
from emulator.nova.runtime_api import iso8601

IN_PROGRESS, COMPLETED, FAILED = "InProgress", "Completed", "Failed"
POLL_SECONDS = 0.5
STATE_SUBDIRECTORY = "nova-async-invokes"
_CLOSE_TIMEOUT_SECONDS = 60.0

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRecord:
    """One async invocation: what GetAsyncInvoke reports, and what the runner needs to finish it.

    Times are epoch seconds on the runtime's clock, kept to the millisecond so that they equal
    their ISO-8601 form. ``output_uri`` is the job's own folder, ``<s3Uri>/<job-id>``, as
    GetAsyncInvoke reports it. ``request_fingerprint`` identifies the StartAsyncInvoke body
    (without its token) for idempotency; ``behaviour`` is the misbehaviour in force at
    submission, which decides the job's length and outcome.
    """

    job_id: str
    invocation_arn: str
    model_arn: str
    client_request_token: str
    request_fingerprint: str
    model_input: Any
    output_uri: str
    kms_key_id: str | None
    bucket_owner: str | None
    tags: tuple[tuple[str, str], ...]
    behaviour: AsyncJobBehaviour
    submit_time: float
    due_time: float
    status: str = IN_PROGRESS
    last_modified_time: float | None = None
    end_time: float | None = None
    failure_message: str | None = None

    def ended(self, status: str, at: float, failure_message: str | None = None) -> JobRecord:
        """This record ``Completed`` or ``Failed`` at ``at``."""
        at = round(at, 3)
        return replace(
            self, status=status, last_modified_time=at, end_time=at, failure_message=failure_message
        )

    def description(self) -> dict[str, Any]:
        """The GetAsyncInvoke response (also a ListAsyncInvokes summary): present fields only."""
        s3_config: dict[str, Any] = {"s3Uri": self.output_uri}
        if self.kms_key_id is not None:
            s3_config["kmsKeyId"] = self.kms_key_id
        if self.bucket_owner is not None:
            s3_config["bucketOwner"] = self.bucket_owner
        document: dict[str, Any] = {
            "invocationArn": self.invocation_arn,
            "modelArn": self.model_arn,
            "clientRequestToken": self.client_request_token,
            "status": self.status,
            "submitTime": iso8601(self.submit_time),
            "lastModifiedTime": iso8601(self.last_modified_time or self.submit_time),
            "outputDataConfig": {"s3OutputDataConfig": s3_config},
        }
        if self.end_time is not None:
            document["endTime"] = iso8601(self.end_time)
        if self.failure_message is not None:
            document["failureMessage"] = self.failure_message
        return document

    def to_json(self) -> dict[str, Any]:
        """The record as stored in the state directory."""
        document = {field.name: getattr(self, field.name) for field in fields(self)}
        document["tags"] = [list(tag) for tag in self.tags]
        document["behaviour"] = self.behaviour.to_json()
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> JobRecord:
        """Read a record written by :meth:`to_json`."""
        values = dict(document)
        values["tags"] = tuple((key, value) for key, value in values["tags"])
        values["behaviour"] = AsyncJobBehaviour.from_json(values["behaviour"])
        return cls(**values)


class JobStore(JobRecords[JobRecord]):
    """The async job records, by job ID (on disk in ``directory`` when given). Thread-safe."""

    def __init__(self, directory: Path | None) -> None:
        super().__init__(directory, JobRecord.from_json, "async")

    def due(self, now: float) -> list[JobRecord]:
        """Jobs still in progress whose due time has come, earliest due first."""
        with self._lock:
            pending = [r for r in self._records.values() if r.status == IN_PROGRESS]
        return sorted(
            (r for r in pending if r.due_time <= now), key=lambda r: (r.due_time, r.job_id)
        )

    def next_due_time(self) -> float | None:
        """The earliest due time among jobs in progress, or None when none is."""
        with self._lock:
            times = [r.due_time for r in self._records.values() if r.status == IN_PROGRESS]
        return min(times, default=None)


class JobRunner:
    """Finishes due jobs with ``finish`` on one background thread (see the module docstring).

    ``finish`` turns an in-progress record into its ended record; it must not raise, but if it
    does, the job fails with an internal error instead of stopping the thread.
    """

    def __init__(
        self,
        store: JobStore,
        finish: Callable[[JobRecord], JobRecord],
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._finish = finish
        self._clock = clock
        self._run_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nova-async-jobs", daemon=True)
        self._thread.start()

    def run_due_jobs(self) -> int:
        """Finish every job that is due now; returns how many were finished."""
        with self._run_lock:
            finished = 0
            for record in self._store.due(self._clock()):
                if self._stopped.is_set():
                    break
                try:
                    ended = self._finish(record)
                except Exception:
                    _log.exception("async job %s failed unexpectedly", record.job_id)
                    ended = record.ended(FAILED, self._clock(), "Internal server error.")
                self._store.put(ended)
                finished += 1
            return finished

    def wake(self) -> None:
        """Make the thread look for due jobs now (a job was submitted)."""
        self._wake.set()

    def close(self) -> None:
        """Stop the thread after the job it is finishing, if any."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(_CLOSE_TIMEOUT_SECONDS)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self.run_due_jobs()
            except Exception:
                _log.exception("async job runner pass failed")
            delay = POLL_SECONDS
            next_due = self._store.next_due_time()
            if next_due is not None:
                delay = min(delay, max(0.0, next_due - self._clock()))
            self._wake.wait(delay)
            self._wake.clear()
