"""Nova Multimodal Embeddings request bodies: the model's input checker and the parsed request.

The real model validates its JSON body against a JSON schema and answers a violation with a
``ValidationException`` worded like ``Malformed input request: #/singleEmbeddingParams: required
key [embeddingPurpose] not found, please reformat your input and try again.``; this module does
the same for both task types (``../shared/reference/aws-apis.md`` §1.2, §1.3, §1.5.2).

Choices where the reference is silent or unsure (§4):

* The real checker lists every violation ("2 schema violations found"); this one reports the
  first it meets, checking each object's required keys, then its extraneous keys, then its
  members in schema order. A message therefore always names one real violation.
* ``embeddingPurpose`` is required, as the schema page says, although one AWS blog snippet
  omits it (§4.6).
* The 3GP video format is spelled ``3gp``, as the Nova embeddings schema lists it; the
  ``three_gp`` spelling of the Nova *understanding* models is rejected (§4.7).
* ``bucketOwner`` is accepted in an ``s3Location`` when it is 12 digits (§4.4); the stand-in has
  a single account, so its value is not otherwise checked.
* An empty inline text ``value`` is rejected (minLength 1): there is nothing to embed.
* The inline limit "25 MB after base64" is 25,000,000 base64 characters, the same decimal
  megabytes as the InvokeModel body limit.
* StartAsyncInvoke accepts only ``s3Location`` sources for image, audio and video, but keeps the
  inline text ``value`` that its schema documents (§4.10).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.errors import bedrock_validation
from emulator.nova.json_checks import (
    bounded_integer_member,
    check_length,
    enum_member,
    exactly_one,
    integer_enum_member,
    malformed,
    reject_extraneous,
    require_keys,
    require_object,
    string_member,
)
from emulator.objects import split_s3_uri

SCHEMA_VERSION = "nova-multimodal-embed-v1"
SINGLE_EMBEDDING = "SINGLE_EMBEDDING"
SEGMENTED_EMBEDDING = "SEGMENTED_EMBEDDING"
TASK_TYPES = (SINGLE_EMBEDDING, SEGMENTED_EMBEDDING)
# Kept apart from novaflow's own copy on purpose: the stand-in follows the API reference on
# its own, so a mistake on either side shows up as a failing test.
EMBEDDING_PURPOSES = (
    "GENERIC_INDEX",
    "GENERIC_RETRIEVAL",
    "TEXT_RETRIEVAL",
    "IMAGE_RETRIEVAL",
    "VIDEO_RETRIEVAL",
    "DOCUMENT_RETRIEVAL",
    "AUDIO_RETRIEVAL",
    "CLASSIFICATION",
    "CLUSTERING",
)
EMBEDDING_DIMENSIONS = (256, 384, 1024, 3072)
DEFAULT_EMBEDDING_DIMENSION = 3072
TRUNCATION_MODES = ("START", "END", "NONE")
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")
DETAIL_LEVELS = ("STANDARD_IMAGE", "DOCUMENT_IMAGE")
DEFAULT_DETAIL_LEVEL = "STANDARD_IMAGE"
AUDIO_FORMATS = ("mp3", "wav", "ogg")
VIDEO_FORMATS = ("mp4", "mov", "mkv", "webm", "flv", "mpeg", "mpg", "wmv", "3gp")
AUDIO_VIDEO_COMBINED = "AUDIO_VIDEO_COMBINED"
AUDIO_VIDEO_SEPARATE = "AUDIO_VIDEO_SEPARATE"
EMBEDDING_MODES = (AUDIO_VIDEO_COMBINED, AUDIO_VIDEO_SEPARATE)
MODALITIES = ("text", "image", "audio", "video")

MAX_INLINE_TEXT_CHARS = 8_192
MAX_INLINE_BASE64_CHARS = 25_000_000
MIN_SEGMENT_CHARS, MAX_SEGMENT_CHARS, DEFAULT_SEGMENT_CHARS = 800, 50_000, 32_000
MIN_SEGMENT_SECONDS, MAX_SEGMENT_SECONDS, DEFAULT_SEGMENT_SECONDS = 1, 30, 5

_PARAMS_KEY = {
    SINGLE_EMBEDDING: "singleEmbeddingParams",
    SEGMENTED_EMBEDDING: "segmentedEmbeddingParams",
}
_OPERATION = {SINGLE_EMBEDDING: "InvokeModel", SEGMENTED_EMBEDDING: "StartAsyncInvoke"}


@dataclass(frozen=True)
class S3Source:
    """An ``s3Location`` source: the object at ``uri``, in ``bucket_owner``'s bucket if given."""

    uri: str
    bucket_owner: str | None = None


@dataclass(frozen=True)
class InlineSource:
    """A ``bytes`` source: ``data`` is the base64-decoded content."""

    data: bytes = field(repr=False)


MediaSource = S3Source | InlineSource


@dataclass(frozen=True)
class TextInput:
    """Text to embed: the inline ``value`` or the UTF-8 object at ``source`` (exactly one).

    ``segment_chars`` is the segment length of a SEGMENTED_EMBEDDING request, else None.
    """

    truncation_mode: str
    value: str | None
    source: S3Source | None
    segment_chars: int | None = None


@dataclass(frozen=True)
class ImageInput:
    """An image, declared to be encoded as ``image_format``."""

    image_format: str
    source: MediaSource
    detail_level: str = DEFAULT_DETAIL_LEVEL


@dataclass(frozen=True)
class AudioInput:
    """An audio file; ``segment_seconds`` is the segment length of a SEGMENTED_EMBEDDING request."""

    audio_format: str
    source: MediaSource
    segment_seconds: int | None = None


@dataclass(frozen=True)
class VideoInput:
    """A video file, embedded per ``embedding_mode``: one combined vector, or video and audio."""

    video_format: str
    source: MediaSource
    embedding_mode: str
    segment_seconds: int | None = None


ModalityInput = TextInput | ImageInput | AudioInput | VideoInput


@dataclass(frozen=True)
class EmbeddingRequest:
    """A request body that passed the input checker: what to embed, how, and for which task."""

    task_type: str
    embedding_purpose: str
    embedding_dimension: int
    content: ModalityInput

    @property
    def segmented(self) -> bool:
        """Whether this is an async SEGMENTED_EMBEDDING request."""
        return self.task_type == SEGMENTED_EMBEDDING


def parse_invoke_model_body(body: bytes) -> EmbeddingRequest:
    """Parse and check an InvokeModel body, which must hold a SINGLE_EMBEDDING request."""
    try:
        document = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as err:
        raise malformed("#", f"the request body is not valid JSON ({err})") from None
    return parse_request(document, SINGLE_EMBEDDING)


def parse_request(document: Any, operation_task: str) -> EmbeddingRequest:
    """Check a Nova request ``document`` for an operation that serves ``operation_task``.

    ``operation_task`` is SINGLE_EMBEDDING for InvokeModel and SEGMENTED_EMBEDDING for the
    ``modelInput`` of StartAsyncInvoke. Raises the ValidationException the model would give.
    """
    top = require_object(document, "#")
    require_keys(top, "#", ("taskType",))
    task_type = enum_member(top, "taskType", "#", TASK_TYPES)
    if task_type != operation_task:
        raise bedrock_validation(
            f"Task type {task_type} is not supported by {_OPERATION[operation_task]}; "
            f"use {_OPERATION[task_type]} for {task_type} requests."
        )
    params_key = _PARAMS_KEY[task_type]
    require_keys(top, "#", (params_key,))
    reject_extraneous(top, "#", ("schemaVersion", "taskType", params_key))
    if "schemaVersion" in top:
        enum_member(top, "schemaVersion", "#", (SCHEMA_VERSION,))
    segmented = task_type == SEGMENTED_EMBEDDING
    pointer = f"#/{params_key}"
    params = require_object(top[params_key], pointer)
    require_keys(params, pointer, ("embeddingPurpose",))
    reject_extraneous(params, pointer, ("embeddingPurpose", "embeddingDimension", *MODALITIES))
    purpose = enum_member(params, "embeddingPurpose", pointer, EMBEDDING_PURPOSES)
    dimension = DEFAULT_EMBEDDING_DIMENSION
    if "embeddingDimension" in params:
        dimension = integer_enum_member(params, "embeddingDimension", pointer, EMBEDDING_DIMENSIONS)
    modality = exactly_one(params, pointer, MODALITIES)
    parse_modality = {
        "text": _text_input,
        "image": _image_input,
        "audio": _audio_input,
        "video": _video_input,
    }[modality]
    content = parse_modality(params[modality], f"{pointer}/{modality}", segmented)
    return EmbeddingRequest(task_type, purpose, dimension, content)


def _text_input(value: Any, pointer: str, segmented: bool) -> TextInput:
    text = require_object(value, pointer)
    required = ("truncationMode", "segmentationConfig") if segmented else ("truncationMode",)
    require_keys(text, pointer, required)
    reject_extraneous(text, pointer, ("value", "source", *required))
    mode = enum_member(text, "truncationMode", pointer, TRUNCATION_MODES)
    exactly_one(text, pointer, ("value", "source"))
    inline, source = None, None
    if "value" in text:
        inline = string_member(text, "value", pointer)
        check_length(inline, f"{pointer}/value", 1, MAX_INLINE_TEXT_CHARS)
    else:
        source_pointer = f"{pointer}/source"
        source_object = require_object(text["source"], source_pointer)
        if "bytes" in source_object:
            raise malformed(
                source_pointer,
                "extraneous key [bytes] is not permitted (text is read only from s3Location)",
            )
        source = _s3_source(source_object, source_pointer)
    segment_chars = None
    if segmented:
        limits = (MIN_SEGMENT_CHARS, MAX_SEGMENT_CHARS, DEFAULT_SEGMENT_CHARS)
        segment_chars = _segmentation(text, pointer, "maxLengthChars", *limits)
    return TextInput(mode, inline, source, segment_chars)


def _image_input(value: Any, pointer: str, segmented: bool) -> ImageInput:
    image = require_object(value, pointer)
    require_keys(image, pointer, ("format", "source"))
    reject_extraneous(image, pointer, ("format", "source", "detailLevel"))
    image_format = enum_member(image, "format", pointer, IMAGE_FORMATS)
    source = _media_source(image["source"], f"{pointer}/source", segmented)
    detail = DEFAULT_DETAIL_LEVEL
    if "detailLevel" in image:
        detail = enum_member(image, "detailLevel", pointer, DETAIL_LEVELS)
    return ImageInput(image_format, source, detail)


def _audio_input(value: Any, pointer: str, segmented: bool) -> AudioInput:
    audio = require_object(value, pointer)
    required = ("format", "source", "segmentationConfig") if segmented else ("format", "source")
    require_keys(audio, pointer, required)
    reject_extraneous(audio, pointer, required)
    audio_format = enum_member(audio, "format", pointer, AUDIO_FORMATS)
    source = _media_source(audio["source"], f"{pointer}/source", segmented)
    seconds = _segment_seconds(audio, pointer) if segmented else None
    return AudioInput(audio_format, source, seconds)


def _video_input(value: Any, pointer: str, segmented: bool) -> VideoInput:
    video = require_object(value, pointer)
    required = ("format", "source", "embeddingMode")
    if segmented:
        required = (*required, "segmentationConfig")
    require_keys(video, pointer, required)
    reject_extraneous(video, pointer, required)
    video_format = enum_member(video, "format", pointer, VIDEO_FORMATS)
    source = _media_source(video["source"], f"{pointer}/source", segmented)
    mode = enum_member(video, "embeddingMode", pointer, EMBEDDING_MODES)
    seconds = _segment_seconds(video, pointer) if segmented else None
    return VideoInput(video_format, source, mode, seconds)


def _segment_seconds(container: Mapping[str, Any], pointer: str) -> int:
    return _segmentation(
        container,
        pointer,
        "durationSeconds",
        MIN_SEGMENT_SECONDS,
        MAX_SEGMENT_SECONDS,
        DEFAULT_SEGMENT_SECONDS,
    )


def _segmentation(
    container: Mapping[str, Any], pointer: str, key: str, low: int, high: int, default: int
) -> int:
    config_pointer = f"{pointer}/segmentationConfig"
    config = require_object(container["segmentationConfig"], config_pointer)
    reject_extraneous(config, config_pointer, (key,))
    if key not in config:
        return default
    return bounded_integer_member(config, key, config_pointer, low, high)


def _media_source(value: Any, pointer: str, segmented: bool) -> MediaSource:
    source = require_object(value, pointer)
    if segmented and "bytes" in source:
        raise malformed(
            pointer,
            "extraneous key [bytes] is not permitted (StartAsyncInvoke reads sources only from "
            "s3Location)",
        )
    if exactly_one(source, pointer, ("bytes", "s3Location")) == "s3Location":
        return _s3_source(source, pointer)
    reject_extraneous(source, pointer, ("bytes",))
    encoded = string_member(source, "bytes", pointer)
    check_length(encoded, f"{pointer}/bytes", 0, MAX_INLINE_BASE64_CHARS)
    try:
        return InlineSource(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        raise malformed(f"{pointer}/bytes", "string is not valid base64") from None


def _s3_source(source: Mapping[str, Any], pointer: str) -> S3Source:
    require_keys(source, pointer, ("s3Location",))
    reject_extraneous(source, pointer, ("s3Location",))
    location_pointer = f"{pointer}/s3Location"
    location = require_object(source["s3Location"], location_pointer)
    require_keys(location, location_pointer, ("uri",))
    reject_extraneous(location, location_pointer, ("uri", "bucketOwner"))
    uri = string_member(location, "uri", location_pointer)
    try:
        split_s3_uri(uri)
    except ValueError:
        raise malformed(
            f"{location_pointer}/uri", f"string [{uri}] does not match pattern s3://<bucket>/<key>"
        ) from None
    owner = None
    if "bucketOwner" in location:
        owner = string_member(location, "bucketOwner", location_pointer)
        if not (len(owner) == 12 and owner.isascii() and owner.isdigit()):
            detail = f"string [{owner}] does not match pattern ^[0-9]{{12}}$"
            raise malformed(f"{location_pointer}/bucketOwner", detail)
    return S3Source(uri, owner)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
