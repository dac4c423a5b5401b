"""Finishing an async job: its outcome, its vectors and the files it leaves in S3.

A completed job writes, under its folder ``<s3Uri without trailing slash>/<job-id>/``
(``../shared/reference/aws-apis.md`` §1.6):

* one JSONL file per embedding type (``embedding-text.jsonl``, ``embedding-image.jsonl``,
  ``embedding-audio.jsonl``, ``embedding-video.jsonl``, ``embedding-audio-video.jsonl``), one
  line per segment in order;
* ``segmented-embedding-result.json``: ``sourceFileUri`` (absent for inline text),
  ``embeddingDimension`` and ``embeddingResults``, one per JSONL file, with ``embeddingType``,
  ``status`` (``SUCCESS`` when every segment succeeded, ``FAILURE`` when none did, otherwise
  ``PARTIAL_SUCCESS``; the documented spelling, not ``FAILED``), ``failureReason`` and
  ``message`` unless SUCCESS, and ``outputFileUri``;
* ``manifest.json`` (its content is undocumented; this is the stand-in's): ``invocationArn``,
  ``jobId``, ``modelArn``, ``taskType``, ``embeddingPurpose``, ``embeddingDimension``,
  ``sourceFileUri`` (absent for inline text), ``submitTime``, ``completionTime``,
  ``resultFileUri`` and ``outputFiles`` (per JSONL file: ``embeddingType``, ``outputFileUri``,
  ``segmentCount``, ``successCount``, ``failureCount``).

JSONL files come first and the manifest last, so a reader who finds the result file finds the
files it names. A job that fails writes nothing and only reports ``failureMessage``.

Outcomes follow the :class:`~emulator.misbehaviour.AsyncJobBehaviour` in force at submission,
drawn with :func:`~emulator.misbehaviour.seeded_fraction` from its seed and the job's
``clientRequestToken``, so a caller who sets the token gets the same outcome on every run: the
whole job fails (``failure_rate``), or is partial (``partial_rate``), in which case each segment
of each file fails (``segment_failure_rate``) with ``failureReason`` INTERNAL_SERVER_EXCEPTION.
A partial job still ends ``Completed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from emulator.errors import ServiceError
from emulator.misbehaviour import seeded_fraction
from emulator.nova.embed import EmbeddingSeries, segmented_embeddings
from emulator.nova.jobs import COMPLETED, FAILED, JobRecord
from emulator.nova.runtime_api import iso8601
from emulator.nova.schema import SEGMENTED_EMBEDDING, EmbeddingRequest, S3Source, parse_request
from emulator.objects import ObjectNotFoundError, ObjectStore

RESULT_FILE_NAME = "segmented-embedding-result.json"
MANIFEST_FILE_NAME = "manifest.json"
INTERNAL_SERVER_EXCEPTION = "INTERNAL_SERVER_EXCEPTION"
JOB_FAILURE_MESSAGE = "The model encountered an internal error while processing the input."
SEGMENT_FAILURE_MESSAGE = "An internal error occurred while embedding this segment."


def finish_job(record: JobRecord, objects: ObjectStore, clock: Callable[[], float]) -> JobRecord:
    """Embed ``record``'s input, write its output, and return the record ended when that is
    done: ``endTime`` is when the output is all there, as a client polling for it would see."""
    now = round(clock(), 3)
    behaviour, draw_key = record.behaviour, record.client_request_token
    if seeded_fraction(behaviour.seed, draw_key, "job-failure") < behaviour.failure_rate:
        return record.ended(FAILED, now, JOB_FAILURE_MESSAGE)
    try:
        request = parse_request(record.model_input, SEGMENTED_EMBEDDING)
        series = segmented_embeddings(objects, request)
    except ServiceError as err:
        # Decoding found a fault that probing at submission did not, or the source changed.
        return record.ended(FAILED, now, err.message[:2048])
    if seeded_fraction(behaviour.seed, draw_key, "partial") < behaviour.partial_rate:
        series = tuple(_with_failed_segments(each, record) for each in series)
    try:
        _write_output(record, request, series, objects, now)
    except ObjectNotFoundError:
        message = f"Unable to write the output to {record.output_uri}: the bucket does not exist."
        return record.ended(FAILED, clock(), message)
    return record.ended(COMPLETED, clock())


def _with_failed_segments(series: EmbeddingSeries, record: JobRecord) -> EmbeddingSeries:
    """``series`` with the segments this job's draws fail replaced by failures."""
    behaviour = record.behaviour
    segments = []
    for index, segment in enumerate(series.segments):
        draw = seeded_fraction(
            behaviour.seed, record.client_request_token, "segment", series.embedding_type, index
        )
        if draw < behaviour.segment_failure_rate and segment.embedding is not None:
            segment = replace(
                segment,
                embedding=None,
                failure_reason=INTERNAL_SERVER_EXCEPTION,
                message=SEGMENT_FAILURE_MESSAGE,
            )
        segments.append(segment)
    return replace(series, segments=tuple(segments))


def _write_output(
    record: JobRecord,
    request: EmbeddingRequest,
    series: tuple[EmbeddingSeries, ...],
    objects: ObjectStore,
    now: float,
) -> None:
    folder = record.output_uri
    source = request.content.source
    source_uri = {"sourceFileUri": source.uri} if isinstance(source, S3Source) else {}
    results, files = [], []
    for each in series:
        file_uri = f"{folder}/{each.file_name}"
        lines = "".join(json.dumps(segment.to_json()) + "\n" for segment in each.segments)
        objects.write(file_uri, lines.encode("utf-8"), "application/jsonl")
        results.append({**_result_status(each), "outputFileUri": file_uri})
        failures = sum(1 for segment in each.segments if segment.embedding is None)
        files.append(
            {
                "embeddingType": each.embedding_type,
                "outputFileUri": file_uri,
                "segmentCount": len(each.segments),
                "successCount": len(each.segments) - failures,
                "failureCount": failures,
            }
        )
    result_uri = f"{folder}/{RESULT_FILE_NAME}"
    result = {
        **source_uri,
        "embeddingDimension": request.embedding_dimension,
        "embeddingResults": results,
    }
    objects.write(result_uri, _json_bytes(result), "application/json")
    manifest = {
        "invocationArn": record.invocation_arn,
        "jobId": record.job_id,
        "modelArn": record.model_arn,
        "taskType": request.task_type,
        "embeddingPurpose": request.embedding_purpose,
        "embeddingDimension": request.embedding_dimension,
        **source_uri,
        "submitTime": iso8601(record.submit_time),
        "completionTime": iso8601(now),
        "resultFileUri": result_uri,
        "outputFiles": files,
    }
    objects.write(f"{folder}/{MANIFEST_FILE_NAME}", _json_bytes(manifest), "application/json")


def _result_status(series: EmbeddingSeries) -> dict[str, Any]:
    """``embeddingType``, ``status`` and, unless all succeeded, ``failureReason``/``message``."""
    failed = [segment for segment in series.segments if segment.embedding is None]
    entry: dict[str, Any] = {"embeddingType": series.embedding_type}
    if not failed:
        return {**entry, "status": "SUCCESS"}
    status = "FAILURE" if len(failed) == len(series.segments) else "PARTIAL_SUCCESS"
    reasons = sorted({segment.failure_reason or INTERNAL_SERVER_EXCEPTION for segment in failed})
    return {
        **entry,
        "status": status,
        "failureReason": reasons[0] if len(reasons) == 1 else INTERNAL_SERVER_EXCEPTION,
        "message": f"{len(failed)} of {len(series.segments)} segments failed; see the segments' "
        "failureReason and message.",
    }


def _json_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document, indent=2).encode("utf-8")
