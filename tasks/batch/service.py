"""The batch inference calls the stage makes, behind a protocol tests can script.

``BedrockBatchService`` is the ``bedrock`` control plane: CreateModelInvocationJob and
GetModelInvocationJob. A job writes its results to ``<outputS3Uri>/<job id>/`` (the job id is
the last part of its ARN), one ``<input file>.out`` per input file and a ``manifest.json.out``
(aws-apis.md, batch inference).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from botocore.client import BaseClient

ENDED = frozenset({"Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"})
"""The statuses a job does not leave (``ModelInvocationJobStatus``)."""


@dataclass(frozen=True)
class BatchJobState:
    """What GetModelInvocationJob says of a job: its ``status``, the service's ``message``
    (why it failed or stopped, if it says), and when it ended (epoch seconds, once it has)."""

    status: str
    message: str = ""
    ended_at: float | None = None

    @property
    def ended(self) -> bool:
        """Whether the job has reached a status it will not leave."""
        return self.status in ENDED


class BatchService(Protocol):
    """The two calls the batch stage makes; ``BedrockBatchService`` is the real one."""

    def create(self, arguments: Mapping[str, Any]) -> str:
        """Create a job (CreateModelInvocationJob keyword arguments); returns its ARN."""
        ...

    def state(self, job_arn: str) -> BatchJobState:
        """The job's current state (GetModelInvocationJob)."""
        ...


class BedrockBatchService:
    """``BatchService`` over ``bedrock`` clients: ``create_client`` keeps botocore's retries;
    ``status_client`` should have none, so a throttled status call reaches the poller at once
    and slows it down instead of being retried blindly."""

    def __init__(self, create_client: BaseClient, status_client: BaseClient) -> None:
        self._create = create_client
        self._status = status_client

    def create(self, arguments: Mapping[str, Any]) -> str:
        return str(self._create.create_model_invocation_job(**arguments)["jobArn"])

    def state(self, job_arn: str) -> BatchJobState:
        answer = self._status.get_model_invocation_job(jobIdentifier=job_arn)
        ended = answer.get("endTime")
        return BatchJobState(
            status=str(answer["status"]),
            message=str(answer.get("message") or ""),
            ended_at=ended.timestamp() if isinstance(ended, datetime) else None,
        )


def job_output_folder(output_uri: str, job_arn: str) -> str:
    """Where the job ``job_arn`` writes its results, given the ``outputS3Uri`` it was created
    with: ``<outputS3Uri>/<job id>/``."""
    return f"{output_uri.rstrip('/')}/{job_arn.rsplit('/', 1)[-1]}/"
