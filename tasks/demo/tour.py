"""A tour of the embedding and vector APIs with plain boto3, as a new user's first script would go.

It embeds a text, an image and a 20 s clip synchronously, runs an async segmented job on a 90 s
video and reads its JSONL, creates a vector index, puts 500 vectors, queries with a filter and
shows the 501-vector put being refused. It reads nothing but the standard AWS variables, so it
runs unchanged against the stand-in (``novaflow emulator`` prints them) or a real account.

``python -m tasks.demo.tour`` runs it against whatever those variables point at.
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tasks import aws_clients
from tasks.demo.sample_media import sample_image, sample_video

MODEL_ID = "amazon.nova-2-multimodal-embeddings-v1:0"
DIMENSION = 1024


@dataclass(frozen=True)
class TourStep:
    """One step of the tour and what it showed."""

    name: str
    outcome: str


@dataclass(frozen=True)
class TourNames:
    """Where the tour puts things: an S3 bucket for media and results, a vector bucket and index."""

    media_bucket: str = "novaflow-tour-media"
    vector_bucket: str = "novaflow-tour-vectors"
    index: str = "tour-index"


def _embed(bedrock: BaseClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    request = {
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": "GENERIC_INDEX",
            "embeddingDimension": DIMENSION,
            **params,
        },
    }
    response = bedrock.invoke_model(
        modelId=MODEL_ID,
        body=json.dumps(request),
        contentType="application/json",
        accept="application/json",
    )
    return json.loads(response["body"].read())["embeddings"]


def _wait_for_job(bedrock: BaseClient, arn: str, deadline_seconds: float) -> dict[str, Any]:
    """Poll with capped exponential backoff and jitter until the job ends or the deadline passes."""
    give_up_at = time.monotonic() + deadline_seconds
    delay = 0.2
    while True:
        job = bedrock.get_async_invoke(invocationArn=arn)
        if job["status"] != "InProgress":
            return job
        if time.monotonic() > give_up_at:
            raise TimeoutError(f"async job {arn} still InProgress after {deadline_seconds:.0f} s")
        time.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, 10.0)


def _read_s3_json_lines(s3: BaseClient, uri: str) -> list[dict[str, Any]]:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return [json.loads(line) for line in body.splitlines() if line.strip()]


def run_tour(
    names: TourNames = TourNames(),
    say: Callable[[str], None] = print,
    job_deadline_seconds: float = 600.0,
) -> list[TourStep]:
    """Run every step against the endpoints the environment names; returns what each showed.

    Raises on the first step that does not behave as the API reference says.
    """
    # Ordinary boto3 clients, made where novaflow makes all of its own.
    s3 = aws_clients.s3_client()
    bedrock = aws_clients.bedrock_runtime_client(max_connections=2)
    vectors = aws_clients.s3vectors_client()
    steps: list[TourStep] = []

    def record(name: str, outcome: str) -> None:
        steps.append(TourStep(name, outcome))
        say(f"  {name:<28} {outcome}")

    try:
        s3.create_bucket(Bucket=names.media_bucket)
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    clip_key, video_key = "tour/clip-20s.mp4", "tour/video-90s.mp4"
    s3.put_object(Bucket=names.media_bucket, Key=clip_key, Body=sample_video(1, 20.0))
    s3.put_object(Bucket=names.media_bucket, Key=video_key, Body=sample_video(2, 90.0))

    text = _embed(bedrock, {"text": {"truncationMode": "END", "value": "a red fox in the snow"}})
    record("embed text", f"{text[0]['embeddingType']}, {len(text[0]['embedding'])} floats")
    image_b64 = base64.b64encode(sample_image(3, "png")).decode()
    image = _embed(bedrock, {"image": {"format": "png", "source": {"bytes": image_b64}}})
    record("embed image", f"{image[0]['embeddingType']}, {len(image[0]['embedding'])} floats")
    clip_uri = f"s3://{names.media_bucket}/{clip_key}"
    clip = _embed(
        bedrock,
        {
            "video": {
                "format": "mp4",
                "source": {"s3Location": {"uri": clip_uri}},
                "embeddingMode": "AUDIO_VIDEO_COMBINED",
            }
        },
    )
    record("embed 20 s clip", f"{clip[0]['embeddingType']}, {len(clip[0]['embedding'])} floats")

    started = bedrock.start_async_invoke(
        modelId=MODEL_ID,
        modelInput={
            "taskType": "SEGMENTED_EMBEDDING",
            "segmentedEmbeddingParams": {
                "embeddingPurpose": "GENERIC_INDEX",
                "embeddingDimension": DIMENSION,
                "video": {
                    "format": "mp4",
                    "source": {"s3Location": {"uri": f"s3://{names.media_bucket}/{video_key}"}},
                    "embeddingMode": "AUDIO_VIDEO_COMBINED",
                    "segmentationConfig": {"durationSeconds": 15},
                },
            },
        },
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{names.media_bucket}/jobs/"}},
    )
    job = _wait_for_job(bedrock, started["invocationArn"], job_deadline_seconds)
    if job["status"] != "Completed":
        raise RuntimeError(f"async job ended {job['status']}: {job.get('failureMessage')}")
    folder = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"].rstrip("/")
    bucket, key = folder.removeprefix("s3://").split("/", 1)
    result = json.loads(
        s3.get_object(Bucket=bucket, Key=f"{key}/segmented-embedding-result.json")["Body"].read()
    )
    segments = [
        line
        for entry in result["embeddingResults"]
        for line in _read_s3_json_lines(s3, entry["outputFileUri"])
    ]
    spans = ", ".join(
        f"{s['segmentMetadata']['segmentStartSeconds']:.0f}-{s['segmentMetadata']['segmentEndSeconds']:.0f}s"
        for s in segments
    )
    record("async job on 90 s video", f"{len(segments)} segments ({spans})")

    with contextlib.suppress(vectors.exceptions.ConflictException):
        vectors.create_vector_bucket(vectorBucketName=names.vector_bucket)
    with contextlib.suppress(vectors.exceptions.ConflictException):
        vectors.create_index(
            vectorBucketName=names.vector_bucket,
            indexName=names.index,
            dataType="float32",
            dimension=DIMENSION,
            distanceMetric="cosine",
            metadataConfiguration={"nonFilterableMetadataKeys": ["caption"]},
        )
    rng = np.random.default_rng(0)
    batch = [
        {
            "key": f"doc-{i}",
            "data": {"float32": rng.standard_normal(DIMENSION).astype(np.float32).tolist()},
            "metadata": {"modality": ("text", "image", "video")[i % 3], "n": i, "caption": f"#{i}"},
        }
        for i in range(501)
    ]
    batch[0]["data"] = {"float32": [float(x) for x in text[0]["embedding"]]}
    vectors.put_vectors(
        vectorBucketName=names.vector_bucket, indexName=names.index, vectors=batch[:500]
    )
    record("put 500 vectors", "accepted")
    hits = vectors.query_vectors(
        vectorBucketName=names.vector_bucket,
        indexName=names.index,
        topK=3,
        queryVector={"float32": [float(x) for x in text[0]["embedding"]]},
        filter={"$and": [{"modality": "text"}, {"n": {"$lt": 100}}]},
        returnDistance=True,
        returnMetadata=True,
    )["vectors"]
    shown = ", ".join(f"{hit['key']} ({hit['distance']:.3f})" for hit in hits)
    record("query with a filter", shown)
    try:
        vectors.put_vectors(
            vectorBucketName=names.vector_bucket, indexName=names.index, vectors=batch
        )
    except vectors.exceptions.ValidationException as err:
        record("put 501 vectors", f"refused: {err.response['Error']['Message'][:60]}")
    else:
        raise RuntimeError("a 501-vector PutVectors was accepted; the API allows at most 500")
    return steps


def main() -> int:
    """Run the tour against the endpoints in the environment."""
    print("novaflow tour of the embedding and vector APIs:")
    run_tour()
    print("tour complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
