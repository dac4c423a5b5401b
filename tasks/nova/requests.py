"""Nova Multimodal Embeddings request bodies and responses, as pure functions.

``invoke_model_body`` builds the SINGLE_EMBEDDING request of ``shared/reference/aws-apis.md``
§1.2-§1.3 and refuses, with a ``PayloadError`` and before any call, every input that breaks a limit
that can be known without the service (§1.7): empty or over-long text, formats the model does not
take, inline media over 25 MB after base64, a body over 25,000,000 bytes, no source or two.
Limits only the service can check (S3 object sizes, media duration over 30 s, whether the bytes
decode) come back from the call as a ``ValidationException``.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson  # a dependency of Prefect's; parses an answer's floats ~5x faster than json

from tasks.settings import EmbeddingSettings

SCHEMA_VERSION = "nova-multimodal-embed-v1"
MAX_TEXT_CHARS = 8_192
MAX_INLINE_BASE64_CHARS = 25_000_000  # "25 MB after base64", read as decimal megabytes
MAX_BODY_BYTES = 25_000_000
IMAGE_FORMATS = frozenset({"png", "jpeg", "gif", "webp"})
AUDIO_FORMATS = frozenset({"mp3", "wav", "ogg"})
VIDEO_FORMATS = frozenset({"mp4", "mov", "mkv", "webm", "flv", "mpeg", "mpg", "wmv", "3gp"})
DETAIL_LEVELS = frozenset({"STANDARD_IMAGE", "DOCUMENT_IMAGE"})
# Kept apart from the stand-in's copy on purpose: each side follows the API reference on its
# own, so a mistake on either side shows up as a failing test.
EMBEDDING_PURPOSES = frozenset(
    {
        "GENERIC_INDEX",
        "GENERIC_RETRIEVAL",
        "TEXT_RETRIEVAL",
        "IMAGE_RETRIEVAL",
        "VIDEO_RETRIEVAL",
        "DOCUMENT_RETRIEVAL",
        "AUDIO_RETRIEVAL",
        "CLASSIFICATION",
        "CLUSTERING",
    }
)
EMBEDDING_TYPES = frozenset({"TEXT", "IMAGE", "VIDEO", "AUDIO", "AUDIO_VIDEO_COMBINED"})

_FORMATS = {"image": IMAGE_FORMATS, "audio": AUDIO_FORMATS, "video": VIDEO_FORMATS}
_FORMAT_ALIASES = {"jpg": "jpeg"}
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]/.+$")

# What an index holds (unit kinds, modalities or embedding types) → the retrieval purpose of §1.2.
_RETRIEVAL_PURPOSE = {
    "text": "TEXT_RETRIEVAL",
    "text_chunk": "TEXT_RETRIEVAL",
    "image": "IMAGE_RETRIEVAL",
    "standard_image": "IMAGE_RETRIEVAL",
    "pdf": "DOCUMENT_RETRIEVAL",
    "pdf_page": "DOCUMENT_RETRIEVAL",
    "document_image": "DOCUMENT_RETRIEVAL",
    "video": "VIDEO_RETRIEVAL",
    "audio_video_combined": "VIDEO_RETRIEVAL",
    "audio": "AUDIO_RETRIEVAL",
}


@dataclass(frozen=True)
class Payload:
    """One input to embed: a text, or media inline (``data``) or in S3 (``s3_uri``).

    Exactly one source: ``text`` or ``s3_uri`` for text; ``data`` or ``s3_uri`` for media.
    ``media_format`` names the encoding (``jpg`` is read as ``jpeg``); ``detail_level`` applies
    to images only (``DOCUMENT_IMAGE`` for rendered pages; default ``STANDARD_IMAGE``).
    """

    kind: Literal["text", "image", "audio", "video"]
    text: str | None = None
    data: bytes | None = field(default=None, repr=False)
    s3_uri: str | None = None
    media_format: str | None = None
    detail_level: str | None = None


class PayloadError(ValueError):
    """A payload breaks a documented limit; found before any call. ``code`` is stable
    (``text_empty``, ``text_too_long``, ``payload_too_large``, ``format_not_accepted``, …) and
    the message says what to change."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ResponseFormatError(ValueError):
    """An InvokeModel answer that is not the documented ``{"embeddings": [...]}`` of the
    expected dimension. ``code`` is ``malformed_response``."""

    code = "malformed_response"


def invoke_model_body(
    payload: Payload, settings: EmbeddingSettings, purpose: str = "GENERIC_INDEX"
) -> dict[str, Any]:
    """The InvokeModel request document for ``payload``: a SINGLE_EMBEDDING request with the
    dimension, truncation mode and video embedding mode of ``settings``.

    Raises ``PayloadError`` when the payload breaks a limit (see the module docstring) and plain
    ``ValueError`` for a purpose the model does not know (a programming error, not bad input).
    """
    if purpose not in EMBEDDING_PURPOSES:
        raise ValueError(f"unknown embeddingPurpose {purpose!r}")
    if payload.kind == "text":
        content, inline_chars = _text_content(payload, settings), 0
    elif payload.kind in _FORMATS:
        content, inline_chars = _media_content(payload, settings)
    else:
        raise PayloadError(
            "kind_not_accepted", f"payload kind {payload.kind!r} is not text/image/audio/video"
        )
    body = {
        "schemaVersion": SCHEMA_VERSION,
        "taskType": "SINGLE_EMBEDDING",
        "singleEmbeddingParams": {
            "embeddingPurpose": purpose,
            "embeddingDimension": settings.dimension,
            payload.kind: content,
        },
    }
    if inline_chars:
        content["source"] = {"bytes": ""}  # measured empty, filled once the size is known good
    envelope_bytes = len(json.dumps(body).encode("utf-8"))
    if envelope_bytes + inline_chars > MAX_BODY_BYTES:
        raise PayloadError(
            "payload_too_large",
            f"the request body would be {envelope_bytes + inline_chars:,} bytes; InvokeModel "
            f"takes at most {MAX_BODY_BYTES:,}: put the file in S3 and pass its s3_uri",
        )
    if inline_chars:
        assert payload.data is not None
        content["source"] = {"bytes": base64.b64encode(payload.data).decode("ascii")}
    return body


def parsed_embeddings(response_body: bytes, dimension: int) -> list[tuple[str, np.ndarray]]:
    """The ``(embeddingType, vector)`` pairs of an InvokeModel answer, in the service's order:
    one pair, or two (video and audio) for ``AUDIO_VIDEO_SEPARATE``. Vectors are read-only
    float32 arrays of ``dimension`` finite values. Raises ``ResponseFormatError`` otherwise."""
    try:
        document = orjson.loads(response_body)
    except orjson.JSONDecodeError:
        # What orjson refuses and json takes (NaN, numbers beyond a double) is then judged below,
        # as it always was.
        try:
            document = json.loads(response_body)
        except (ValueError, UnicodeDecodeError) as err:
            raise ResponseFormatError(f"the InvokeModel answer is not JSON ({err})") from None
    return embeddings_in(document, dimension)


def embeddings_in(document: object, dimension: int) -> list[tuple[str, np.ndarray]]:
    """``parsed_embeddings`` of an answer already parsed from JSON (a batch job's
    ``modelOutput`` is the InvokeModel answer, inside the record's line)."""
    embeddings = document.get("embeddings") if isinstance(document, dict) else None
    if not isinstance(embeddings, list) or not embeddings:
        raise ResponseFormatError("the InvokeModel answer has no 'embeddings' list")
    parsed: list[tuple[str, np.ndarray]] = []
    for position, entry in enumerate(embeddings):
        kind = entry.get("embeddingType") if isinstance(entry, dict) else None
        values = entry.get("embedding") if isinstance(entry, dict) else None
        if kind not in EMBEDDING_TYPES or not isinstance(values, list):
            raise ResponseFormatError(f"embeddings[{position}] lacks embeddingType or embedding")
        if len(values) != dimension:
            raise ResponseFormatError(
                f"embeddings[{position}] has {len(values)} values; {dimension} were asked for"
            )
        try:
            vector = np.asarray(values, dtype=np.float32)
        except (TypeError, ValueError):
            raise ResponseFormatError(f"embeddings[{position}] holds non-numbers") from None
        if vector.ndim != 1 or not np.isfinite(vector).all():
            raise ResponseFormatError(f"embeddings[{position}] holds NaN, Inf or nested values")
        vector.setflags(write=False)
        parsed.append((kind, vector))
    return parsed


def query_purpose(index_modalities: set[str]) -> str:
    """The embeddingPurpose for query vectors searched against an index holding
    ``index_modalities`` (§1.2): the one ``*_RETRIEVAL`` purpose matching a single-modality
    index, ``GENERIC_RETRIEVAL`` for a mixed or empty one.

    Names are unit kinds, modalities or embedding types, any case: ``text``, ``image`` (made
    with STANDARD_IMAGE), ``pdf`` / ``pdf_page`` / ``document_image`` (DOCUMENT_IMAGE),
    ``video`` / ``audio_video_combined``, ``audio``.
    """
    purposes = set()
    for name in index_modalities:
        purpose = _RETRIEVAL_PURPOSE.get(name.lower())
        if purpose is None:
            raise ValueError(f"unknown modality {name!r}; known: {sorted(_RETRIEVAL_PURPOSE)}")
        purposes.add(purpose)
    return purposes.pop() if len(purposes) == 1 else "GENERIC_RETRIEVAL"


def _text_content(payload: Payload, settings: EmbeddingSettings) -> dict[str, Any]:
    if payload.data is not None:
        raise PayloadError(
            "source_not_accepted",
            "text is sent as a value or read from S3; Nova takes no inline bytes for text",
        )
    _exactly_one_source(payload.text is not None, payload.s3_uri is not None, "text or s3_uri")
    if payload.detail_level is not None or payload.media_format is not None:
        raise PayloadError(
            "format_not_accepted", "a text payload takes no media_format or detail_level"
        )
    content: dict[str, Any] = {"truncationMode": settings.truncation_mode}
    if payload.text is not None:
        if not payload.text.strip():
            raise PayloadError("text_empty", "the text is empty or only whitespace")
        if len(payload.text) > MAX_TEXT_CHARS:
            raise PayloadError(
                "text_too_long",
                f"the text has {len(payload.text):,} characters; at most {MAX_TEXT_CHARS:,} "
                "are sent inline: chunk it, or embed it from S3 with an async job",
            )
        content["value"] = payload.text
    else:
        content["source"] = {"s3Location": {"uri": _checked_s3_uri(payload.s3_uri)}}
    return content


def _media_content(payload: Payload, settings: EmbeddingSettings) -> tuple[dict[str, Any], int]:
    """The modality object (without an inline source) and the base64 length it will carry."""
    _exactly_one_source(payload.data is not None, payload.s3_uri is not None, "data or s3_uri")
    if payload.text is not None:
        raise PayloadError("source_not_accepted", f"a {payload.kind} payload takes no text")
    accepted = _FORMATS[payload.kind]
    if payload.media_format is None:
        raise PayloadError("format_missing", f"a {payload.kind} payload needs a media_format")
    media_format = payload.media_format.lower().lstrip(".")
    media_format = _FORMAT_ALIASES.get(media_format, media_format)
    if media_format not in accepted:
        raise PayloadError(
            "format_not_accepted",
            f"{payload.kind} format {payload.media_format!r} is not accepted by Nova; "
            f"accepted: {', '.join(sorted(accepted))}",
        )
    content: dict[str, Any] = {"format": media_format}
    if payload.kind == "image":
        detail = payload.detail_level or "STANDARD_IMAGE"
        if detail not in DETAIL_LEVELS:
            raise PayloadError(
                "detail_level_not_accepted",
                f"detail_level {detail!r} is not one of {', '.join(sorted(DETAIL_LEVELS))}",
            )
        content["detailLevel"] = detail
    elif payload.detail_level is not None:
        raise PayloadError(
            "detail_level_not_accepted", f"detail_level applies to images, not {payload.kind}"
        )
    if payload.kind == "video":
        content["embeddingMode"] = settings.video_embedding_mode
    if payload.s3_uri is not None:
        content["source"] = {"s3Location": {"uri": _checked_s3_uri(payload.s3_uri)}}
        return content, 0
    assert payload.data is not None
    if not payload.data:
        raise PayloadError("media_empty", f"the {payload.kind} data is empty")
    base64_chars = 4 * math.ceil(len(payload.data) / 3)
    if base64_chars > MAX_INLINE_BASE64_CHARS:
        raise PayloadError(
            "payload_too_large",
            f"{len(payload.data):,} bytes are {base64_chars:,} after base64; inline media may "
            f"be at most {MAX_INLINE_BASE64_CHARS:,}: put the file in S3 and pass its s3_uri",
        )
    return content, base64_chars


def _exactly_one_source(first: bool, second: bool, names: str) -> None:
    if first and second:
        raise PayloadError("multiple_sources", f"give exactly one of {names}, not both")
    if not first and not second:
        raise PayloadError("no_source", f"give exactly one of {names}")


def _checked_s3_uri(uri: str | None) -> str:
    if uri is None or not _S3_URI.match(uri):
        raise PayloadError("s3_uri_malformed", f"{uri!r} is not an s3://bucket/key URI")
    return uri
