"""Batch inference jobs: their records, their timeline, and where they are kept.

A job moves ``Submitted`` → ``Validating`` → ``Scheduled`` → ``InProgress`` → ``Completed``,
``PartiallyCompleted`` or ``Failed``; a failed validation ends it ``Failed`` from
``Validating``; a job still ``Scheduled`` at its expiration time ends ``Expired``; a stop moves
a job that has not ended to ``Stopping``, then ``Stopped``. The statuses and their meaning are
the ``ModelInvocationJobStatus`` enum's
(https://docs.aws.amazon.com/bedrock/latest/APIReference/API_GetModelInvocationJob.html).

How long each status lasts comes from the :class:`~emulator.misbehaviour.BatchJobBehaviour` in
force at submission; :func:`next_step` says when the current status ends, on the service's
clock, so a test that moves a fake clock sees every status in turn. Every time a record reports
is the planned time of its transition, to the millisecond.

⚠ A job times out (``jobExpirationTime``) its ``timeoutDurationInHours`` after it was submitted;
AWS does not say from when the timeout counts.

With a state directory each record is one JSON file, ``<state_dir>/model-invocation-jobs/
<job-id>.json``, replaced atomically on each change, so jobs survive a restart.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from emulator.bedrock.control_api import CreateJobRequest, VpcConfig
from emulator.bedrock.limits import DEFAULT_TIMEOUT_HOURS, BatchLimits
from emulator.bedrock.output import JobCounts
from emulator.job_records import JobRecords
from emulator.misbehaviour import BatchJobBehaviour
from emulator.nova.runtime_api import iso8601

SUBMITTED, VALIDATING, SCHEDULED, IN_PROGRESS = "Submitted", "Validating", "Scheduled", "InProgress"
COMPLETED, PARTIALLY_COMPLETED, FAILED = "Completed", "PartiallyCompleted", "Failed"
STOPPING, STOPPED, EXPIRED = "Stopping", "Stopped", "Expired"
ENDED = frozenset({COMPLETED, PARTIALLY_COMPLETED, FAILED, STOPPED, EXPIRED})
STOPPABLE = frozenset({SUBMITTED, VALIDATING, SCHEDULED, IN_PROGRESS})
STATE_SUBDIRECTORY = "model-invocation-jobs"

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchJobRecord:
    """One batch inference job: what GetModelInvocationJob reports and what the service needs
    to move it on.

    Times are epoch seconds on the service's clock, to the millisecond. ``status_time`` is when
    the current status began (reported as ``lastModifiedTime``); ``started_time`` when the job
    began ``InProgress``; ``stopped_from`` the status a stop interrupted. ``behaviour`` and
    ``limits`` are those in force at submission.
    """

    job_id: str
    job_arn: str
    request: CreateJobRequest
    client_request_token: str
    behaviour: BatchJobBehaviour
    limits: BatchLimits
    submit_time: float
    status: str = SUBMITTED
    status_time: float = 0.0
    started_time: float | None = None
    stopped_from: str | None = None
    end_time: float | None = None
    message: str | None = None
    total_records: int = 0
    counts: JobCounts | None = None

    @property
    def timeout_hours(self) -> int:
        """The job's timeout: as requested, else the stand-in's default."""
        return self.request.timeout_hours or DEFAULT_TIMEOUT_HOURS

    @property
    def expiration_time(self) -> float:
        """When the job times out: ⚠ its submit time plus its timeout."""
        return self.submit_time + self.timeout_hours * 3600.0

    @property
    def run_seconds(self) -> float:
        """How long the job needs ``InProgress`` to reach every record."""
        behaviour = self.behaviour
        return behaviour.job_seconds + behaviour.seconds_per_record * self.total_records

    def moved(self, status: str, at: float, **changes: Any) -> BatchJobRecord:
        """This record in ``status`` from ``at``; an ended status also sets ``end_time``."""
        at = round(at, 3)
        end_time = at if status in ENDED else None
        return replace(self, status=status, status_time=at, end_time=end_time, **changes)

    def description(self) -> dict[str, Any]:
        """The GetModelInvocationJob response (also a ListModelInvocationJobs summary)."""
        request = self.request
        source: dict[str, Any] = {"s3Uri": request.input_uri}
        if request.input_format is not None:
            source["s3InputFormat"] = request.input_format
        if request.input_bucket_owner is not None:
            source["s3BucketOwner"] = request.input_bucket_owner
        target: dict[str, Any] = {"s3Uri": request.output_uri}
        if request.output_kms_key_id is not None:
            target["s3EncryptionKeyId"] = request.output_kms_key_id
        if request.output_bucket_owner is not None:
            target["s3BucketOwner"] = request.output_bucket_owner
        counts = self.counts or JobCounts(total=self.total_records)
        document: dict[str, Any] = {
            "jobArn": self.job_arn,
            "jobName": request.job_name,
            "modelId": request.model_id,
            "clientRequestToken": self.client_request_token,
            "roleArn": request.role_arn,
            "status": self.status,
            "submitTime": iso8601(self.submit_time),
            "lastModifiedTime": iso8601(self.status_time),
            "inputDataConfig": {"s3InputDataConfig": source},
            "outputDataConfig": {"s3OutputDataConfig": target},
            "timeoutDurationInHours": self.timeout_hours,
            "jobExpirationTime": iso8601(self.expiration_time),
            "totalRecordCount": counts.total,
            "processedRecordCount": counts.processed,
            "successRecordCount": counts.success,
            "errorRecordCount": counts.error,
        }
        if self.message is not None:
            document["message"] = self.message
        if self.end_time is not None:
            document["endTime"] = iso8601(self.end_time)
        if request.vpc is not None:
            document["vpcConfig"] = {
                "subnetIds": list(request.vpc.subnet_ids),
                "securityGroupIds": list(request.vpc.security_group_ids),
            }
        if request.invocation_type is not None:
            document["modelInvocationType"] = request.invocation_type
        return document

    def to_json(self) -> dict[str, Any]:
        """The record as stored in the state directory."""
        document = asdict(self)
        document["behaviour"] = self.behaviour.to_json()
        document["limits"] = self.limits.to_json()
        return document

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> BatchJobRecord:
        """Read a record written by :meth:`to_json`."""
        values = dict(document)
        request = dict(values["request"])
        vpc = request["vpc"]
        request["vpc"] = None if vpc is None else VpcConfig(**{k: tuple(v) for k, v in vpc.items()})
        request["tags"] = tuple((key, value) for key, value in request["tags"])
        values["request"] = CreateJobRequest(**request)
        values["behaviour"] = BatchJobBehaviour.from_json(values["behaviour"])
        values["limits"] = BatchLimits.from_json(values["limits"])
        values["counts"] = None if values["counts"] is None else JobCounts(**values["counts"])
        return cls(**values)


def next_step(record: BatchJobRecord) -> float | None:
    """When ``record``'s current status ends on the service's clock; None once it has ended.

    A job ``Scheduled`` past its expiration ends then (``Expired``); one whose run would pass it
    is cut off then (``PartiallyCompleted``).
    """
    behaviour, since = record.behaviour, record.status_time
    if record.status in (SUBMITTED, VALIDATING, STOPPING):
        return since + behaviour.phase_seconds
    if record.status == SCHEDULED:
        return min(since + behaviour.queue_seconds, record.expiration_time)
    if record.status == IN_PROGRESS:
        return min(since + record.run_seconds, record.expiration_time)
    return None


class BatchJobStore(JobRecords[BatchJobRecord]):
    """The batch job records, by job ID (on disk in ``directory`` when given). Thread-safe."""

    def __init__(self, directory: Path | None) -> None:
        super().__init__(directory, BatchJobRecord.from_json, "batch")
