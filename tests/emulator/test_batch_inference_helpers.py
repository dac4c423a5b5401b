"""Fixtures and helpers shared by the batch inference tests (``test_batch_inference_*.py``); this
module holds no tests.

The batch tests run their own stand-in whose batch jobs move on a fake clock: a test moves the
clock and reads the job, so it sees each status exactly when it is due, without sleeping. A test
module binds the fixtures to its own names (``world = helpers.world``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from emulator.app import Emulator, EmulatorSettings
from emulator.bedrock.limits import BatchLimits
from emulator.misbehaviour import BatchJobBehaviour
from tests.emulator.nova_job_helpers import FakeClock

MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/BatchInference"
# Each waiting status lasts 10 s and a run 60 s: Submitted at t, Validating at t+10,
# Scheduled at t+20, InProgress at t+30, ended at t+90.
STEPS = BatchJobBehaviour(phase_seconds=10.0, queue_seconds=10.0, job_seconds=60.0)
PHASE, RUN = 10.0, 60.0


def text_input(text: str, dimension: int = 256) -> dict[str, Any]:
    """An InvokeModel body (a record's ``modelInput``) embedding inline ``text``."""
    return {
        "schemaVersion": "nova-multimodal-embed-v1",
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX",
            "embeddingDimension": dimension,
            "text": {"truncationMode": "END", "value": text},
        },
    }


def text_records(count: int, prefix: str = "rec") -> list[dict[str, Any]]:
    """``count`` records with IDs ``<prefix>-0000``… embedding short seeded sentences."""
    words = ("river", "stone", "bread", "light", "wind", "harbour", "ash", "field")
    return [
        {
            "recordId": f"{prefix}-{index:04d}",
            "modelInput": text_input(
                " ".join(words[(index + k) % 8] for k in range(index % 5 + 2))
            ),
        }
        for index in range(count)
    ]


def jsonl(records: list[Any]) -> bytes:
    """The JSONL text of ``records``, one per line."""
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def lines_of(data: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, which must end with a newline."""
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode().splitlines()]


def at(epoch_seconds: float) -> datetime:
    """The timestamp botocore parses for a time on the fake clock."""
    return datetime.fromtimestamp(round(epoch_seconds, 3), UTC)


def refused(exception: type[ClientError], call: Callable[[], object], status: int = 400) -> str:
    """Run ``call``, expecting ``exception`` with HTTP ``status``; returns the error message."""
    with pytest.raises(exception) as caught:
        call()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    return caught.value.response["Error"]["Message"]


@dataclass(frozen=True)
class World:
    """One test's view of the batch stand-in: clients, the fake clock and its own bucket."""

    stand_in: Emulator
    clock: FakeClock
    control: BaseClient
    runtime: BaseClient
    s3: BaseClient
    bucket: str

    def put(self, key: str, data: bytes) -> str:
        """Store ``data`` at ``key`` in the test's bucket; returns its ``s3://`` URI."""
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)
        return f"s3://{self.bucket}/{key}"

    def create(self, input_uri: str | None = None, **arguments: Any) -> str:
        """Create a job reading ``input_uri`` (default the bucket's ``input/`` folder) and
        writing under ``results/``; keyword arguments override or add request members."""
        request: dict[str, Any] = {
            "jobName": "batch-test",
            "roleArn": ROLE_ARN,
            "modelId": MODEL_ID,
            "inputDataConfig": {
                "s3InputDataConfig": {"s3Uri": input_uri or f"s3://{self.bucket}/input/"}
            },
            "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": f"s3://{self.bucket}/results/"}},
            **arguments,
        }
        return self.control.create_model_invocation_job(**request)["jobArn"]

    def job(self, arn: str) -> dict[str, Any]:
        """GetModelInvocationJob's answer."""
        return self.control.get_model_invocation_job(jobIdentifier=arn)

    def status_after(self, arn: str, seconds: float) -> str:
        """The job's status once the clock has moved on ``seconds``."""
        self.clock.advance(seconds)
        return self.job(arn)["status"]

    def read(self, uri: str) -> bytes:
        """The bytes of the object at an ``s3://`` URI."""
        bucket, key = uri.removeprefix("s3://").split("/", 1)
        return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` in the test's bucket."""
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listing.get("Contents", []))

    def folder(self, arn: str) -> str:
        """The key prefix the job writes its results under: ``results/<job-id>/``."""
        return f"results/{arn.rsplit('/', 1)[1]}/"


@pytest.fixture(scope="module")
def batch_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="module")
def batch_stand_in(batch_clock: FakeClock) -> Iterator[Emulator]:
    """A stand-in of the test module's own, in memory, whose batch jobs follow the fake clock."""
    with Emulator(EmulatorSettings(batch_clock=batch_clock, batch_jobs=STEPS)) as running:
        yield running


@pytest.fixture
def world(
    batch_stand_in: Emulator, batch_clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[World]:
    """A well-behaved batch stand-in with default quotas and a new bucket named after the test."""
    batch_stand_in.configure(
        bedrock_control_faults=(), batch_jobs=STEPS, batch_limits=BatchLimits()
    )
    s3 = batch_stand_in.client("s3")
    bucket = "batch-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    s3.create_bucket(Bucket=bucket)
    yield World(
        stand_in=batch_stand_in,
        clock=batch_clock,
        control=batch_stand_in.client("bedrock", retries={"mode": "standard"}),
        runtime=batch_stand_in.client("bedrock-runtime"),
        s3=s3,
        bucket=bucket,
    )
    batch_stand_in.configure(
        bedrock_control_faults=(), batch_jobs=STEPS, batch_limits=BatchLimits()
    )
