"""What a finished Nova async job leaves in S3 (``shared/reference/aws-apis.md`` §1.6), read as
pure functions: the ``segmented-embedding-result.json`` index, its JSONL files (one line per
segment), where they are, and the S3 Vectors key of each segment. A line that cannot be used
becomes a ``SegmentFailure`` rather than an exception, so every segment is either loaded or
accounted for.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from tasks.nova.requests import EMBEDDING_TYPES
from tasks.records import chunk_key, span_key

RESULT_FILE_NAME = "segmented-embedding-result.json"
_POSITION_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("index", "segmentIndex", int),
    ("start_seconds", "segmentStartSeconds", float),
    ("end_seconds", "segmentEndSeconds", float),
    ("char_start", "segmentStartCharPosition", int),
    ("char_end", "segmentEndCharPosition", int),
)
# "FAILED" is how one implementation spells FAILURE (§4.3).
_RESULT_STATUSES = {s: s for s in ("SUCCESS", "FAILURE", "PARTIAL_SUCCESS")} | {"FAILED": "FAILURE"}
# §1.6 lists embedding-image.json (likely a typo) and no combined file; the launch blog reads
# embedding-audio-video.jsonl for AUDIO_VIDEO_COMBINED (§4.1).
_RESULT_FILE_NAMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "TEXT": ("embedding-text.jsonl",),
        "IMAGE": ("embedding-image.jsonl", "embedding-image.json"),
        "AUDIO": ("embedding-audio.jsonl",),
        "VIDEO": ("embedding-video.jsonl",),
        "AUDIO_VIDEO_COMBINED": ("embedding-audio-video.jsonl", "embedding-video.jsonl"),
    }
)


class ResultFormatError(ValueError):
    """A ``segmented-embedding-result.json`` that is not the documented index of result files.
    ``code`` is ``malformed_result``."""

    code = "malformed_result"


@dataclass(frozen=True)
class ResultFile:
    """One entry of a job's result index: the outcome of one embedding type and where its JSONL
    file is. ``status`` is SUCCESS, FAILURE or PARTIAL_SUCCESS; ``output_file_uri`` is None only
    when the whole type failed and the service named no file."""

    embedding_type: str
    status: str
    output_file_uri: str | None
    failure_reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class JobResult:
    """A finished job's result index: the source it read (None for inline text), the dimension
    it embedded at and one ``ResultFile`` per embedding type, in the service's order."""

    source_uri: str | None
    dimension: int
    files: tuple[ResultFile, ...]


@dataclass(frozen=True, eq=False)
class Segment:
    """One embedded segment: ``vector`` is a read-only float32 array of finite values of the
    job's dimension. Media segments carry their times in seconds, text segments their character
    positions (end exclusive, §4.3); ``index`` is the service's 0-based segment number."""

    index: int | None
    embedding_type: str
    vector: np.ndarray
    start_seconds: float | None = None
    end_seconds: float | None = None
    char_start: int | None = None
    char_end: int | None = None


@dataclass(frozen=True)
class SegmentFailure:
    """A segment with no usable vector: the service's ``failureReason`` (or ``malformed_output``
    when the line itself could not be read) and a message; position fields as far as known."""

    index: int | None
    embedding_type: str
    reason: str
    message: str
    start_seconds: float | None = None
    end_seconds: float | None = None
    char_start: int | None = None
    char_end: int | None = None


def parsed_job_result(document: bytes | str) -> JobResult:
    """The result index a finished job writes as ``segmented-embedding-result.json``. Raises
    ``ResultFormatError`` when it is not JSON, names no result files or has an entry without a
    known embedding type, a known status, or (unless FAILURE) an ``outputFileUri``."""
    try:
        parsed = json.loads(document)
    except (ValueError, UnicodeDecodeError) as err:
        raise ResultFormatError(f"{RESULT_FILE_NAME} is not JSON ({err})") from None
    entries = parsed.get("embeddingResults") if isinstance(parsed, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ResultFormatError(f"{RESULT_FILE_NAME} has no 'embeddingResults' list")
    dimension = parsed.get("embeddingDimension")
    if not _is_int(dimension) or dimension <= 0:
        raise ResultFormatError(f"{RESULT_FILE_NAME} has no embeddingDimension")
    source = parsed.get("sourceFileUri")
    return JobResult(
        source_uri=source if isinstance(source, str) else None,
        dimension=dimension,
        files=tuple(_result_file(position, entry) for position, entry in enumerate(entries)),
    )


def _result_file(position: int, entry: Any) -> ResultFile:
    where = f"embeddingResults[{position}]"
    if not isinstance(entry, dict):
        raise ResultFormatError(f"{where} is not an object")
    embedding_type = entry.get("embeddingType")
    if embedding_type not in EMBEDDING_TYPES:
        raise ResultFormatError(f"{where} has unknown embeddingType {embedding_type!r}")
    raw_status = entry.get("status")
    status = _RESULT_STATUSES.get(raw_status.upper()) if isinstance(raw_status, str) else None
    if status is None:
        raise ResultFormatError(f"{where} has unknown status {raw_status!r}")
    uri = entry.get("outputFileUri")
    if not isinstance(uri, str) or not uri:
        if status != "FAILURE":
            raise ResultFormatError(f"{where} is {status} but names no outputFileUri")
        uri = None
    reason, message = entry.get("failureReason"), entry.get("message")
    return ResultFile(
        embedding_type=embedding_type,
        status=status,
        output_file_uri=uri,
        failure_reason=reason if isinstance(reason, str) else None,
        message=message if isinstance(message, str) else None,
    )


def parsed_segment_lines(
    lines: Iterable[bytes | str], embedding_type: str, dimension: int
) -> Iterator[Segment | SegmentFailure]:
    """One ``Segment`` or ``SegmentFailure`` per non-blank line of a result JSONL file, in order.

    A line the service marks FAILURE keeps its ``failureReason`` (``FAILURE`` if none). A line
    that is not JSON, lacks its embedding, has the wrong number of values, non-finite values or
    mistyped positions becomes a failure with reason ``malformed_output`` and a message naming
    its (1-based) line number; this never raises on content. A line's own ``embeddingType``
    overrides ``embedding_type``.
    """
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        yield _parsed_line(number, line, embedding_type, dimension)


def _parsed_line(
    number: int, line: bytes | str, default_type: str, dimension: int
) -> Segment | SegmentFailure:
    where = f"line {number} of the {default_type} output"
    try:
        document = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return _malformed(default_type, f"{where} is not JSON", {})
    if not isinstance(document, dict):
        return _malformed(default_type, f"{where} is not a JSON object", {})
    own_type = document.get("embeddingType")
    embedding_type = own_type if isinstance(own_type, str) and own_type else default_type
    position, problem = _position(document.get("segmentMetadata"))
    if problem:
        return _malformed(embedding_type, f"{where}: {problem}", position)
    raw_status = document.get("status")
    status = raw_status.upper() if isinstance(raw_status, str) else raw_status
    if status in ("FAILURE", "FAILED"):
        reason, message = document.get("failureReason"), document.get("message")
        return SegmentFailure(
            embedding_type=embedding_type,
            reason=reason if isinstance(reason, str) and reason else "FAILURE",
            message=message
            if isinstance(message, str) and message
            else f"{where}: marked {status} with no message",
            **position,
        )
    if status not in (None, "SUCCESS"):
        return _malformed(embedding_type, f"{where} has unknown status {raw_status!r}", position)
    vector, problem = _vector(document.get("embedding"), dimension)
    if vector is None:
        return _malformed(embedding_type, f"{where}: {problem}", position)
    return Segment(embedding_type=embedding_type, vector=vector, **position)


def _position(metadata: Any) -> tuple[dict[str, Any], str | None]:
    """Index, times and character positions from ``segmentMetadata``, and what is wrong."""
    if not isinstance(metadata, dict):
        absent = {name: None for name, _, _ in _POSITION_FIELDS}
        return absent, None if metadata is None else f"segmentMetadata is {metadata!r:.40}"
    position: dict[str, Any] = {}
    problems = []
    for name, wire_name, wanted in _POSITION_FIELDS:
        value = metadata.get(wire_name)
        if value is not None and not (_is_finite(value) if wanted is float else _is_int(value)):
            problems.append(f"{wire_name} is {value!r:.40}")
            value = None
        position[name] = None if value is None else wanted(value)
    return position, "; ".join(problems) or None


def _vector(values: Any, dimension: int) -> tuple[np.ndarray | None, str]:
    if not isinstance(values, list):
        return None, "no embedding"
    if len(values) != dimension:
        return None, f"embedding has {len(values)} values; {dimension} were asked for"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None, "embedding holds non-numbers"
    try:
        with np.errstate(over="ignore"):  # overflow to inf is caught just below
            vector = np.asarray(values, dtype=np.float32)
    except OverflowError:  # an int beyond float64 range
        return None, "embedding holds infinite values"
    if not np.isfinite(vector).all():
        return None, "embedding holds NaN or infinite values"
    vector.setflags(write=False)
    return vector, ""


def _malformed(embedding_type: str, message: str, position: dict[str, Any]) -> SegmentFailure:
    known = {"index": None, **position}
    return SegmentFailure(
        embedding_type=embedding_type, reason="malformed_output", message=message, **known
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    try:
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def result_file_names(embedding_type: str) -> tuple[str, ...]:
    """The file names a job may use for ``embedding_type``'s JSONL, preferred first; for when
    the result index cannot be read, since its ``outputFileUri`` is authoritative (§4.1)."""
    try:
        return _RESULT_FILE_NAMES[embedding_type]
    except KeyError:
        raise ValueError(
            f"unknown embedding type {embedding_type!r}; known: {sorted(_RESULT_FILE_NAMES)}"
        ) from None


def job_folder(reported_s3_uri: str, invocation_arn: str) -> str:
    """The S3 folder (no trailing slash) a job writes its results in: the ``s3Uri`` that
    GetAsyncInvoke reports when it already ends with the job id, as the launch blog shows, else
    that URI plus ``/<job id>`` (§1.6, §4.2). The job id is the ARN's last path segment."""
    job_id = invocation_arn.rpartition("/")[2]
    if "/" not in invocation_arn or not job_id:
        raise ValueError(f"{invocation_arn!r} is not an async-invoke ARN")
    if not reported_s3_uri.startswith("s3://"):
        raise ValueError(f"{reported_s3_uri!r} is not an s3:// URI")
    folder = reported_s3_uri.rstrip("/")
    _bucket, _, path = folder.removeprefix("s3://").partition("/")
    if path.rpartition("/")[2] == job_id:
        return folder
    return f"{folder}/{job_id}"


def segment_key(item_id: str, segment: Segment | SegmentFailure, separate: bool) -> str | None:
    """The S3 Vectors key of a segment (also the unit key of its failure): a time span such as
    ``talk#t=15.0-30.0`` for media, ``notes#chunk=3`` for text (by segment index); with
    ``separate`` (a video job in AUDIO_VIDEO_SEPARATE mode) VIDEO and AUDIO segments get
    ``#video`` / ``#audio`` appended so the two vectors of one span do not overwrite each other.
    None when the segment has neither times nor an index and so cannot be keyed.
    """
    if segment.start_seconds is not None and segment.end_seconds is not None:
        key = span_key(item_id, segment.start_seconds, segment.end_seconds)
    elif segment.index is not None:
        key = chunk_key(item_id, segment.index)
    else:
        return None
    if separate and segment.embedding_type in ("VIDEO", "AUDIO"):
        return f"{key}#{segment.embedding_type.lower()}"
    return key
