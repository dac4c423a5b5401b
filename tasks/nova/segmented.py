"""Nova asynchronous SEGMENTED_EMBEDDING jobs: requests and limits, as pure functions.

``checked_async_input`` refuses, before any call, inputs that break a documented async limit of
``shared/reference/aws-apis.md`` §1.7 (size, 2-hour media, segment caps) and says which setting to
change. ``start_async_invoke_arguments`` builds the keyword arguments of boto3's
``start_async_invoke`` (§1.5) with a deterministic idempotency token. What a finished job leaves
in S3 is read by ``tasks.jobs.results``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

from tasks.nova.requests import AUDIO_FORMATS, SCHEMA_VERSION, VIDEO_FORMATS
from tasks.settings import EmbeddingSettings

AsyncKind = Literal["text", "audio", "video"]

ASYNC_MAX_SECONDS = 7200.0
ASYNC_MAX_BYTES: Mapping[str, int] = MappingProxyType(
    {"text": 634_000_000, "audio": 1_000_000_000, "video": 2_000_000_000}
)
MAX_MEDIA_SEGMENTS = 1_434
MAX_TEXT_SEGMENTS = 1_900

_FORMATS = {"audio": AUDIO_FORMATS, "video": VIDEO_FORMATS}
_INPUT_URI = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+")
_OUTPUT_URI = re.compile(r"s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?")
_TOKEN = re.compile(r"[!-~]{1,256}")
# Per kind: segment cap, largest segment setting, its settings field, and its unit in messages.
_SEGMENT_RULES = {
    "text": (MAX_TEXT_SEGMENTS, 50_000, "async_text_segment_chars", "-character"),
    "audio": (MAX_MEDIA_SEGMENTS, 30, "segment_seconds", " s"),
    "video": (MAX_MEDIA_SEGMENTS, 30, "segment_seconds", " s"),
}


class AsyncInputError(ValueError):
    """An async job input breaks a documented limit; found before any call. ``code`` is stable
    (``too_large_for_async``, ``too_long_for_async``, ``too_many_segments``, ``media_empty``,
    ``format_missing``, ``format_not_accepted``, ``s3_uri_malformed``) and the message says what
    to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
