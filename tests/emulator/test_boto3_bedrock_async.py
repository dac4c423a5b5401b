"""Async invocations on the Nova stand-in through real boto3 clients over HTTP: a job from
StartAsyncInvoke to its files in S3, listing and paging, submission errors, idempotency, and the
misbehaviour a test can switch on (aws-apis.md §1.5, §1.6, §1.8)."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from emulator.app import Emulator
from emulator.misbehaviour import AsyncJobBehaviour, Misbehaviour
from tasks.demo import sample_media

MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
CLIP_SECONDS = 40.0
POLL_DEADLINE_SECONDS = 30.0


@pytest.fixture(scope="module")
def long_clip() -> bytes:
    """About 40 seconds of picture and sound, small and at a low frame rate."""
    return sample_media.sample_video(7, CLIP_SECONDS, "mp4", width=32, height=32, fps=2)


@pytest.fixture(scope="module")
def essay() -> str:
    """About 6,000 characters of seeded words, some with accents, in lines and paragraphs."""
    rng = np.random.default_rng(8)
    words = ["river", "stone", "café", "naïve", "light", "hour", "über", "sea", "wind", "ash"]
    lines = [" ".join(rng.choice(words, size=12)) for _ in range(80)]
    return "\n\n".join("\n".join(lines[i : i + 8]) for i in range(0, 80, 8))


@pytest.fixture
def bucket(s3: BaseClient, request: pytest.FixtureRequest) -> str:
    """A new bucket named after the test, so tests sharing the session's stand-in never meet."""
    name = "async-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    s3.create_bucket(Bucket=name)
    return name


def s3_source(uri: str) -> dict[str, Any]:
    """An ``s3Location`` source."""
    return {"s3Location": {"uri": uri}}


def video_input(uri: str, seconds: int = 10, mode: str = "AUDIO_VIDEO_SEPARATE") -> Any:
    """Segmented video ``content`` for :func:`model_input`."""
    return {
        "video": {
            "format": "mp4",
            "source": s3_source(uri),
            "embeddingMode": mode,
            "segmentationConfig": {"durationSeconds": seconds},
        }
    }


def model_input(content: dict[str, Any], dimension: int = 256) -> dict[str, Any]:
    """A SEGMENTED_EMBEDDING ``modelInput`` document for StartAsyncInvoke."""
    params = {"embeddingPurpose": "GENERIC_INDEX", "embeddingDimension": dimension, **content}
    return {
        "schemaVersion": "nova-multimodal-embed-v1",
        "taskType": "SEGMENTED_EMBEDDING",
        "segmentedEmbeddingParams": params,
    }


def text_input(segmentation: dict[str, Any] | None = None, **text: Any) -> dict[str, Any]:
    """Segmented text ``content`` for :func:`model_input`: ``value=`` or ``source=``."""
    config = {"segmentationConfig": segmentation or {}}
    return {"text": {"truncationMode": "END", **config, **text}}


def start(bedrock: BaseClient, bucket: str, document: dict[str, Any], **extra: Any) -> str:
    """Start a job writing under ``s3://bucket/results/``; returns its invocation ARN."""
    response = bedrock.start_async_invoke(
        modelId=MODEL_ID,
        modelInput=document,
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{bucket}/results/"}},
        **extra,
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    return response["invocationArn"]


def wait_for_end(bedrock: BaseClient, arn: str) -> dict[str, Any]:
    """Poll GetAsyncInvoke until the job is no longer InProgress; its last description."""
    pause = threading.Event()
    deadline = time.monotonic() + POLL_DEADLINE_SECONDS
    while True:
        job = bedrock.get_async_invoke(invocationArn=arn)
        if job["status"] != "InProgress" or time.monotonic() > deadline:
            return job
        pause.wait(0.05)


def read(s3: BaseClient, uri: str) -> bytes:
    """The bytes of the object at an ``s3://`` URI."""
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def job_results(s3: BaseClient, job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A finished job's ``segmented-embedding-result.json`` and its JSONL files' records by type."""
    folder = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
    result = json.loads(read(s3, f"{folder}/segmented-embedding-result.json"))
    lines = {}
    for entry in result["embeddingResults"]:
        data = read(s3, entry["outputFileUri"]).decode()
        lines[entry["embeddingType"]] = [json.loads(line) for line in data.splitlines()]
    return result, lines


def refused(exception: type[ClientError], call: Callable[[], object], status: int = 400) -> str:
    """Run ``call``, expecting ``exception`` with HTTP ``status``; returns the error message."""
    with pytest.raises(exception) as caught:
        call()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    return caught.value.response["Error"]["Message"]


def test_video_job_writes_segments_covering_the_clip(
    bedrock: BaseClient, s3: BaseClient, bucket: str, long_clip: bytes
) -> None:
    s3.put_object(Bucket=bucket, Key="media/clip.mp4", Body=long_clip)
    arn = start(bedrock, bucket, model_input(video_input(f"s3://{bucket}/media/clip.mp4"), 1024))
    job_id = arn.rsplit("/", 1)[1]
    assert arn == f"arn:aws:bedrock:us-east-1:123456789012:async-invoke/{job_id}"
    job = wait_for_end(bedrock, arn)
    assert job["status"] == "Completed"
    assert job["modelArn"] == f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL_ID}"
    assert job["submitTime"] <= job["endTime"] == job["lastModifiedTime"]
    assert "failureMessage" not in job
    folder = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
    assert folder == f"s3://{bucket}/results/{job_id}"

    result, lines = job_results(s3, job)
    assert result["sourceFileUri"] == f"s3://{bucket}/media/clip.mp4"
    assert result["embeddingDimension"] == 1024
    assert [r["embeddingType"] for r in result["embeddingResults"]] == ["VIDEO", "AUDIO"]
    for entry in result["embeddingResults"]:
        assert entry["status"] == "SUCCESS"
        assert entry["outputFileUri"].startswith(f"{folder}/")
    for records in lines.values():
        metadata = [record["segmentMetadata"] for record in records]
        assert [m["segmentIndex"] for m in metadata] == list(range(len(metadata)))
        assert metadata[0]["segmentStartSeconds"] == 0.0
        for before, after in itertools.pairwise(metadata):
            assert before["segmentEndSeconds"] == after["segmentStartSeconds"]
        assert all(0 < m["segmentEndSeconds"] - m["segmentStartSeconds"] <= 10 for m in metadata)
        assert metadata[-1]["segmentEndSeconds"] == pytest.approx(CLIP_SECONDS, abs=0.1)
        for record in records:
            assert record["status"] == "SUCCESS"
            assert len(record["embedding"]) == 1024
    assert [r["segmentMetadata"] for r in lines["VIDEO"]] == [
        r["segmentMetadata"] for r in lines["AUDIO"]
    ]
    assert lines["VIDEO"][0]["embedding"] != lines["AUDIO"][0]["embedding"]


def test_text_job_spans_cover_the_text(
    bedrock: BaseClient, s3: BaseClient, bucket: str, essay: str
) -> None:
    s3.put_object(Bucket=bucket, Key="texts/essay.txt", Body=essay.encode())
    content = text_input(
        {"maxLengthChars": 800}, source=s3_source(f"s3://{bucket}/texts/essay.txt")
    )
    job = wait_for_end(bedrock, start(bedrock, bucket, model_input(content, 384)))
    assert job["status"] == "Completed"
    result, lines = job_results(s3, job)
    assert [(r["embeddingType"], r["status"]) for r in result["embeddingResults"]] == [
        ("TEXT", "SUCCESS")
    ]
    metadata = [record["segmentMetadata"] for record in lines["TEXT"]]
    spans = [(m["segmentStartCharPosition"], m["segmentEndCharPosition"]) for m in metadata]
    assert len(spans) >= len(essay) // 800
    assert spans[0][0] == 0
    assert spans[-1][1] == len(essay)
    assert all(before[1] == after[0] for before, after in itertools.pairwise(spans))
    assert all(0 < end - start <= 800 for start, end in spans)
    assert "".join(essay[start:end] for start, end in spans) == essay
    assert all(len(r["embedding"]) == 384 for r in lines["TEXT"])


def test_listing_filters_sorts_and_pages(bedrock: BaseClient, s3: BaseClient, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="t.txt", Body=b"a short note to embed")
    document = model_input(text_input(source=s3_source(f"s3://{bucket}/t.txt")))
    arns = [start(bedrock, bucket, document) for _ in range(3)]
    assert len(set(arns)) == 3
    assert [wait_for_end(bedrock, arn)["status"] for arn in arns] == ["Completed"] * 3

    def listed(**query: Any) -> list[str]:
        response = bedrock.list_async_invokes(**query)
        return [summary["invocationArn"] for summary in response["asyncInvokeSummaries"]]

    assert set(arns) <= set(listed(statusEquals="Completed"))
    assert not set(arns) & set(listed(statusEquals="InProgress"))
    assert not set(arns) & set(listed(statusEquals="Failed"))
    ascending = bedrock.list_async_invokes(sortOrder="Ascending")["asyncInvokeSummaries"]
    times = [summary["submitTime"] for summary in ascending]
    assert times == sorted(times)
    assert [s["invocationArn"] for s in ascending] == listed(sortOrder="Descending")[::-1]
    assert listed() == listed(sortOrder="Descending", sortBy="SubmissionTime")

    paginator = bedrock.get_paginator("list_async_invokes")
    pages = list(paginator.paginate(sortOrder="Ascending", PaginationConfig={"PageSize": 2}))
    assert len(pages) >= 2
    assert all(len(page["asyncInvokeSummaries"]) <= 2 for page in pages)
    assert all("nextToken" in page for page in pages[:-1])
    assert "nextToken" not in pages[-1]
    paged = [s["invocationArn"] for page in pages for s in page["asyncInvokeSummaries"]]
    assert len(paged) == len(set(paged))
    assert paged == [s["invocationArn"] for s in ascending]
    assert set(arns) <= set(paged)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        pytest.param(
            model_input({"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}),
            "extraneous key [bytes] is not permitted (StartAsyncInvoke reads sources only",
            id="inline-bytes",
        ),
        pytest.param(
            model_input(video_input("s3://{bucket}/media/clip.mp4", seconds=31)),
            "durationSeconds: 31 is not less or equal to 30",
            id="duration-31",
        ),
        pytest.param(
            model_input(text_input({"maxLengthChars": 799}, value="words")),
            "maxLengthChars: 799 is not greater or equal to 800",
            id="max-length-799",
        ),
        pytest.param(
            {
                "taskType": "SINGLE_EMBEDDING",
                "singleEmbeddingParams": {
                    "embeddingPurpose": "GENERIC_INDEX",
                    "text": {"truncationMode": "END", "value": "words"},
                },
            },
            "Task type SINGLE_EMBEDDING is not supported by StartAsyncInvoke",
            id="single-embedding",
        ),
    ],
)
def test_invalid_async_requests_raise_validation_exception(
    bedrock: BaseClient,
    s3: BaseClient,
    bucket: str,
    long_clip: bytes,
    document: dict[str, Any],
    fragment: str,
    request: pytest.FixtureRequest,
) -> None:
    s3.put_object(Bucket=bucket, Key="media/clip.mp4", Body=long_clip)
    document = json.loads(json.dumps(document).replace("{bucket}", bucket))
    token = f"refused-{request.node.callspec.id}"
    message = refused(
        bedrock.exceptions.ValidationException,
        lambda: start(bedrock, bucket, document, clientRequestToken=token),
    )
    assert fragment in message
    summaries = bedrock.list_async_invokes()["asyncInvokeSummaries"]
    assert token not in {summary["clientRequestToken"] for summary in summaries}


def test_client_request_token_is_idempotent_and_conflicts_on_another_body(
    bedrock: BaseClient, bucket: str
) -> None:
    document = model_input(text_input(value="idempotent"))
    token = f"token-{bucket}"
    first = start(bedrock, bucket, document, clientRequestToken=token)
    assert start(bedrock, bucket, document, clientRequestToken=token) == first
    assert bedrock.get_async_invoke(invocationArn=first)["clientRequestToken"] == token
    other = model_input(text_input(value="something else"))
    message = refused(
        bedrock.exceptions.ConflictException,
        lambda: start(bedrock, bucket, other, clientRequestToken=token),
    )
    assert f"The clientRequestToken {token} was already used with a different request." == message
    # botocore fills in a fresh token when none is given: two calls, two jobs.
    assert start(bedrock, bucket, document) != start(bedrock, bucket, document)


def test_unknown_invocation_arn_is_a_validation_error(bedrock: BaseClient) -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:async-invoke/zzzzzzzzzzzz"
    message = refused(
        bedrock.exceptions.ValidationException,
        lambda: bedrock.get_async_invoke(invocationArn=arn),
    )
    assert message == f"The async invocation {arn} does not exist."


def modelled_pattern(bedrock: BaseClient, operation: str, member: str) -> str:
    """The pattern of input ``member`` (a dotted path) of ``operation`` in the service model."""
    shape = bedrock.meta.service_model.operation_model(operation).input_shape
    for name in member.split("."):
        shape = shape.members[name]
    return shape.metadata["pattern"]


OUTPUT = "outputDataConfig.s3OutputDataConfig."


@pytest.mark.parametrize(
    ("member", "value"),
    [
        ("clientRequestToken", "with space"),
        ("modelId", "amazon nova"),
        (f"{OUTPUT}s3Uri", "s3://B"),
        (f"{OUTPUT}bucketOwner", "1"),
        ("invocationArn", "abcdef123456"),
    ],
    ids=["token", "model-id", "s3-uri", "bucket-owner", "invocation-arn"],
)
def test_pattern_violations_quote_the_modelled_pattern(
    bedrock: BaseClient, member: str, value: str
) -> None:
    arguments: dict[str, Any] = {
        "modelId": MODEL_ID,
        "modelInput": model_input(text_input(value="x")),
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://b-1/out"}},
    }
    *parents, leaf = member.split(".")
    target = arguments
    for name in parents:
        target = target[name]
    target[leaf] = value
    operation, call = "StartAsyncInvoke", lambda: bedrock.start_async_invoke(**arguments)
    if member == "invocationArn":
        operation, call = "GetAsyncInvoke", lambda: bedrock.get_async_invoke(invocationArn=value)
    pattern = modelled_pattern(bedrock, operation, member)
    assert refused(bedrock.exceptions.ValidationException, call) == (
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {pattern}"
    )


def test_failing_jobs_end_failed_and_write_nothing(
    stand_in: Emulator, bedrock: BaseClient, s3: BaseClient, bucket: str, long_clip: bytes
) -> None:
    stand_in.configure(async_jobs=AsyncJobBehaviour(job_seconds=0.3, failure_rate=1.0))
    s3.put_object(Bucket=bucket, Key="media/clip.mp4", Body=long_clip)
    job = wait_for_end(
        bedrock, start(bedrock, bucket, model_input(video_input(f"s3://{bucket}/media/clip.mp4")))
    )
    assert job["status"] == "Failed"
    assert job["failureMessage"]
    assert job["endTime"] == job["lastModifiedTime"]
    listing = s3.list_objects_v2(Bucket=bucket, Prefix="results/")
    assert listing["KeyCount"] == 0


def test_partial_jobs_report_failed_segments(
    stand_in: Emulator, bedrock: BaseClient, s3: BaseClient, bucket: str, long_clip: bytes
) -> None:
    behaviour = AsyncJobBehaviour(job_seconds=0.3, partial_rate=1.0, segment_failure_rate=0.5)
    stand_in.configure(async_jobs=behaviour)
    s3.put_object(Bucket=bucket, Key="media/clip.mp4", Body=long_clip)
    document = model_input(video_input(f"s3://{bucket}/media/clip.mp4", seconds=5))
    arn = start(bedrock, bucket, document, clientRequestToken="partial-job")
    job = wait_for_end(bedrock, arn)
    assert job["status"] == "Completed"
    result, lines = job_results(s3, job)
    assert [r["status"] for r in result["embeddingResults"]] == ["PARTIAL_SUCCESS"] * 2
    for entry in result["embeddingResults"]:
        assert entry["failureReason"] == "INTERNAL_SERVER_EXCEPTION"
        assert entry["message"]
    records = [record for each in lines.values() for record in each]
    failed = [record for record in records if record["status"] == "FAILURE"]
    assert 0 < len(failed) < len(records) == 16
    for record in failed:
        assert "embedding" not in record
        assert record["failureReason"] == "INTERNAL_SERVER_EXCEPTION"
        assert record["message"]
    for record in records:
        if record["status"] == "SUCCESS":
            assert len(record["embedding"]) == 256


def test_throttled_polling_is_retried_three_times_then_raised(
    stand_in: Emulator, bedrock: BaseClient, bucket: str
) -> None:
    arn = start(bedrock, bucket, model_input(text_input(value="poll me")))
    throttle = Misbehaviour(operations=frozenset({"GetAsyncInvoke"}), throttle_rate=1.0)
    stand_in.configure(bedrock_faults=(throttle,))
    with pytest.raises(bedrock.exceptions.ThrottlingException) as caught:
        bedrock.get_async_invoke(invocationArn=arn)
    response = caught.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert response["ResponseMetadata"]["RetryAttempts"] == 2
    stats = stand_in.stats()["bedrock-runtime"]
    assert stats["calls"]["GetAsyncInvoke"] == 3
    assert stats["errors"]["GetAsyncInvoke"] == {"ThrottlingException": 3}
    # Other operations are unaffected.
    assert bedrock.list_async_invokes(maxResults=1)["asyncInvokeSummaries"]
