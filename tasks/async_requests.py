"""Nova asynchronous SEGMENTED_EMBEDDING jobs: requests, limits and results, as pure functions.

``checked_async_input`` refuses, before any call, inputs that break a documented async limit of
``shared/reference/aws-apis.md`` §1.7 (size, 2-hour media, segment caps) and says which setting to
change. ``start_async_invoke_arguments`` builds the keyword arguments of boto3's
``start_async_invoke`` (§1.5). The rest reads what a finished job leaves in S3 (§1.6): the
``segmented-embedding-result.json`` index and its JSONL files, one line per segment. A line that
cannot be used becomes a ``SegmentFailure`` rather than an exception, so every segment is either
loaded or accounted for.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from tasks.nova_requests import AUDIO_FORMATS, EMBEDDING_TYPES, SCHEMA_VERSION, VIDEO_FORMATS
from tasks.records import chunk_key, span_key
from tasks.settings import EmbeddingSettings

AsyncKind = Literal["text", "audio", "video"]

ASYNC_MAX_SECONDS = 7200.0
ASYNC_MAX_BYTES: Mapping[str, int] = MappingProxyType(
    {"text": 634_000_000, "audio": 1_000_000_000, "video": 2_000_000_000}
)
MAX_MEDIA_SEGMENTS = 1_434
MAX_TEXT_SEGMENTS = 1_900
RESULT_FILE_NAME = "segmented-embedding-result.json"

_FORMATS = {"audio": AUDIO_FORMATS, "video": VIDEO_FORMATS}
_INPUT_URI = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+")
_OUTPUT_URI = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?")
_TOKEN = re.compile(r"[!-~]{1,256}")
_POSITION_FIELDS: tuple[tuple[str, str, type], ...] = (
    ("index", "segmentIndex", int),
    ("start_seconds", "segmentStartSeconds", float),
    ("end_seconds", "segmentEndSeconds", float),
    ("char_start", "segmentStartCharPosition", int),
    ("char_end", "segmentEndCharPosition", int),
)
# "FAILED" is how one implementation spells FAILURE (§4.3).
_RESULT_STATUSES = {s: s for s in ("SUCCESS", "FAILURE", "PARTIAL_SUCCESS")} | {"FAILED": "FAILURE"}
# Per kind: segment cap, largest segment setting, its settings field, and its unit in messages.
_SEGMENT_RULES = {
    "text": (MAX_TEXT_SEGMENTS, 50_000, "async_text_segment_chars", "-character"),
    "audio": (MAX_MEDIA_SEGMENTS, 30, "segment_seconds", " s"),
    "video": (MAX_MEDIA_SEGMENTS, 30, "segment_seconds", " s"),
}
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


class AsyncInputError(ValueError):
    """An async job input breaks a documented limit; found before any call. ``code`` is stable
    (``too_large_for_async``, ``too_long_for_async``, ``too_many_segments``, ``media_empty``,
    ``format_missing``, ``format_not_accepted``, ``s3_uri_malformed``) and the message says what
    to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


def checked_async_input(
    kind: AsyncKind,
    size_bytes: int,
    settings: EmbeddingSettings,
    duration_seconds: float | None = None,
    char_count: int | None = None,
) -> int:
    """The number of segments an async job over this input makes, per embedding type (one
    vector each, two per segment for ``AUDIO_VIDEO_SEPARATE``).

    Raises ``AsyncInputError`` for an input the service would refuse (see the class), and plain
    ``ValueError`` when ``duration_seconds`` (audio/video) or ``char_count`` (text) is missing or
    not a finite, measured number: a programming error, not bad input.
    """
    if kind not in ASYNC_MAX_BYTES:
        raise ValueError(f"async kind must be text, audio or video, not {kind!r}")
    measure = char_count if kind == "text" else duration_seconds
    if measure is None or not math.isfinite(measure) or size_bytes < 0:
        raise ValueError(f"an async {kind} input needs a size and its measured length")
    limit = ASYNC_MAX_BYTES[kind]
    if size_bytes > limit:
        raise AsyncInputError(
            "too_large_for_async",
            f"the {kind} file is {size_bytes:,} bytes; async jobs take at most {limit:,}: "
            "split it into smaller files",
        )
    if size_bytes == 0 or measure <= 0:
        raise AsyncInputError("media_empty", f"the {kind} input is empty")
    if kind == "text":
        return _segment_count(kind, int(measure), settings.async_text_segment_chars)
    if measure > ASYNC_MAX_SECONDS:
        raise AsyncInputError(
            "too_long_for_async",
            f"the {kind} file lasts {_shown(measure)} s; async jobs take at most "
            f"{_shown(ASYNC_MAX_SECONDS)} s (2 hours): split it into shorter files",
        )
    return _segment_count(kind, float(measure), settings.segment_seconds)


def _segment_count(kind: str, length: float, per_segment: int) -> int:
    cap, largest, field, what = _SEGMENT_RULES[kind]
    segments = math.ceil(length / per_segment)
    if segments <= cap:
        return segments
    fits = math.ceil(length / cap)  # within the 2-hour cap, media always fits at 6 s
    change = (
        f"set {field} (NOVAFLOW_EMBEDDING__{field.upper()}) to {fits:,} or more"
        if fits <= largest
        else f"split it; even {field}={largest:,} makes {math.ceil(length / largest):,} segments"
    )
    raise AsyncInputError(
        "too_many_segments",
        f"a {_shown(length)}{what} {kind} file at {per_segment:,}{what} segments makes "
        f"{segments:,} segments; Nova allows {cap:,}: {change}",
    )


def _shown(number: float) -> str:
    """``7,200`` or ``7,170.5``: thousands separated, no needless decimals."""
    return f"{number:,.3f}".rstrip("0").rstrip(".")


def client_request_token(
    run_id: str, unit_key: str, fingerprint: str, config_hash: str, attempt: int
) -> str:
    """The ``clientRequestToken`` of one submission: ``nf-<48 hex>-a<attempt>``. The same
    arguments always give the same token, so a retried StartAsyncInvoke is recognised as the
    same request; any other run, unit, content version, configuration or attempt gives another.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    # JSON keeps the parts apart: ("a", "b|c") and ("a|b", "c") must not collide.
    canonical = json.dumps([run_id, unit_key, fingerprint, config_hash])
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:48]
    return f"nf-{digest}-a{attempt}"


def start_async_invoke_arguments(
    kind: AsyncKind,
    input_uri: str,
    media_format: str | None,
    output_uri: str,
    token: str,
    settings: EmbeddingSettings,
) -> dict[str, Any]:
    """The keyword arguments of boto3 ``bedrock-runtime`` ``start_async_invoke``: a
    SEGMENTED_EMBEDDING job (§1.5.2) reading ``input_uri`` and writing under ``output_uri``, at
    the dimension, truncation, segment lengths and video embedding mode of ``settings``.

    Raises ``AsyncInputError`` for a malformed S3 URI or a format Nova does not take (text takes
    none), and ``ValueError`` for an unknown kind or a token outside ``[!-~]{1,256}``.
    """
    if not _INPUT_URI.fullmatch(input_uri):
        raise AsyncInputError("s3_uri_malformed", f"{input_uri!r} is not an s3://bucket/key URI")
    if not _OUTPUT_URI.fullmatch(output_uri):
        raise AsyncInputError(
            "s3_uri_malformed", f"{output_uri!r} is not an s3://bucket or s3://bucket/prefix URI"
        )
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"clientRequestToken {token!r} must be 1-256 printable ASCII characters")
    source = {"s3Location": {"uri": input_uri}}
    content: dict[str, Any]
    if kind == "text":
        if media_format is not None:
            raise AsyncInputError("format_not_accepted", "an async text job takes no format")
        content = {
            "truncationMode": settings.truncation_mode,
            "source": source,
            "segmentationConfig": {"maxLengthChars": settings.async_text_segment_chars},
        }
    elif kind in _FORMATS:
        content = {"format": _checked_format(kind, media_format), "source": source}
        if kind == "video":
            content["embeddingMode"] = settings.video_embedding_mode
        content["segmentationConfig"] = {"durationSeconds": settings.segment_seconds}
    else:
        raise ValueError(f"async kind must be text, audio or video, not {kind!r}")
    return {
        "clientRequestToken": token,
        "modelId": settings.model_id,
        "modelInput": {
            "schemaVersion": SCHEMA_VERSION,
            "taskType": "SEGMENTED_EMBEDDING",
            "segmentedEmbeddingParams": {
                "embeddingPurpose": "GENERIC_INDEX",
                "embeddingDimension": settings.dimension,
                kind: content,
            },
        },
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": output_uri}},
    }


def _checked_format(kind: str, media_format: str | None) -> str:
    if media_format is None:
        raise AsyncInputError("format_missing", f"an async {kind} job needs a media format")
    accepted = _FORMATS[kind]
    normalised = media_format.lower().lstrip(".")
    if normalised not in accepted:
        raise AsyncInputError(
            "format_not_accepted",
            f"{kind} format {media_format!r} is not accepted by Nova; "
            f"accepted: {', '.join(sorted(accepted))}",
        )
    return normalised


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
