"""The job service the async runner works against (and, from ``tasks.polling``, its clock and
poll schedule).

``BedrockJobService`` is the real service; tests and the benchmark give the runner a scripted
one and a simulated clock, so the same scheduling code runs in seconds on simulated hours.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from botocore.client import BaseClient

from tasks.jobs.results import job_folder
from tasks.polling import Clock, PollSchedule, SystemClock

__all__ = ["BedrockJobService", "Clock", "JobService", "JobState", "PollSchedule", "SystemClock"]

JobStatusName = Literal["InProgress", "Completed", "Failed"]


@dataclass(frozen=True)
class JobState:
    """What GetAsyncInvoke says of a job: its status, the folder its output goes to, when it
    ended (epoch seconds, if it has) and the service's failure message (if it failed)."""

    status: JobStatusName
    output_folder: str
    ended_at: float | None = None
    failure_message: str | None = None


class JobService(Protocol):
    """The two calls the runner makes; ``BedrockJobService`` is the real one."""

    def start(self, arguments: Mapping[str, Any]) -> str:
        """Submit a job (StartAsyncInvoke keyword arguments); returns its invocation ARN."""
        ...

    def state(self, invocation_arn: str) -> JobState:
        """The job's current state (GetAsyncInvoke)."""
        ...


class BedrockJobService:
    """``JobService`` over Bedrock runtime clients: ``submit_client`` keeps botocore's retries;
    ``status_client`` should have none (``max_attempts=0``), so a throttled status call reaches
    the poller at once and slows it down instead of being retried blindly."""

    def __init__(self, submit_client: BaseClient, status_client: BaseClient) -> None:
        self._submit = submit_client
        self._status = status_client

    def start(self, arguments: Mapping[str, Any]) -> str:
        return str(self._submit.start_async_invoke(**arguments)["invocationArn"])

    def state(self, invocation_arn: str) -> JobState:
        answer = self._status.get_async_invoke(invocationArn=invocation_arn)
        reported = answer["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
        ended = answer.get("endTime")
        return JobState(
            status=answer["status"],
            output_folder=job_folder(reported, invocation_arn),
            ended_at=ended.timestamp() if isinstance(ended, datetime) else None,
            failure_message=answer.get("failureMessage"),
        )
