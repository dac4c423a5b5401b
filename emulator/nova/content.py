"""What a Nova request names, read and checked: the source bytes, their size, format and length.

The schema checker (:mod:`emulator.nova.schema`) only sees the request document; the checks here
need the content itself (``../shared/reference/aws-apis.md`` §1.7). Every failure is a
``ValidationException`` whose message names what is wrong and where the content came from.

Choices where the reference is silent:

* MB and GB are decimal (10^6 and 10^9 bytes), like the 25,000,000-byte InvokeModel body limit.
* A duration limit is exceeded only by more than :data:`DURATION_TOLERANCE_SECONDS`: encoders
  pad audio by a few milliseconds (MP3 and AAC priming), so a clip cut to 30 s may probe as
  30.03 s.
* The declared audio or video ``format`` must name the container family the bytes are in (an
  MP4 declared ``mov`` passes, both being QuickTime; a WAV declared ``mp3`` does not), just as a
  declared image format must match the image's signature.
* An empty text object is rejected, like an empty inline ``value``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emulator.errors import ServiceError, bedrock_validation
from emulator.nova import media
from emulator.nova.schema import (
    AudioInput,
    ImageInput,
    InlineSource,
    MediaSource,
    S3Source,
    TextInput,
    VideoInput,
)
from emulator.objects import ObjectNotFoundError, ObjectStore

MB = 1_000_000
GB = 1_000_000_000
DURATION_TOLERANCE_SECONDS = 0.1
AUDIO_SAMPLE_RATE = 8_000
MAX_TEXT_SEGMENTS = 1_900
MAX_MEDIA_SEGMENTS = 1_434

# Container names PyAV may report for each declared format (its demuxers serve families).
_CONTAINERS = {
    "wav": {"wav"},
    "mp3": {"mp3"},
    "ogg": {"ogg"},
    "mp4": {"mov", "mp4"},
    "mov": {"mov", "mp4"},
    "3gp": {"mov", "mp4", "3gp"},
    "mkv": {"matroska", "webm"},
    "webm": {"matroska", "webm"},
    "flv": {"flv", "live_flv"},
    "mpeg": {"mpeg", "mpegts", "mpegvideo"},
    "mpg": {"mpeg", "mpegts", "mpegvideo"},
    "wmv": {"asf"},
}


@dataclass(frozen=True)
class ContentLimits:
    """The size and length limits that apply to one operation's sources."""

    operation: str
    text_max_bytes: int
    text_max_chars: int | None
    image_max_bytes: int
    audio_max_bytes: int
    video_max_bytes: int
    media_max_seconds: float


SYNC_LIMITS = ContentLimits("InvokeModel", 1 * MB, 50_000, 50 * MB, 100 * MB, 100 * MB, 30.0)
ASYNC_LIMITS = ContentLimits("StartAsyncInvoke", 634 * MB, None, 50 * MB, 1 * GB, 2 * GB, 7_200.0)


@dataclass(frozen=True)
class LoadedMedia:
    """An audio or video file that passed the checks: its bytes and what probing found."""

    data: bytes
    info: media.MediaInfo


def describe(source: MediaSource | None) -> str:
    """Where content came from, for messages: the S3 URI or ``inline bytes``."""
    if isinstance(source, S3Source):
        return source.uri
    return "inline bytes" if isinstance(source, InlineSource) else "inline text"


def read_source(objects: ObjectStore, source: MediaSource, max_bytes: int, kind: str) -> bytes:
    """The bytes of ``source``; an S3 object is sized before it is read and must exist."""
    if isinstance(source, InlineSource):
        return source.data
    try:
        size = objects.size(source.uri)
        if size > max_bytes:
            raise bedrock_validation(
                f"The {kind} object {source.uri} is {size} bytes, over the {max_bytes}-byte limit "
                "for this operation."
            )
        return objects.read(source.uri)
    except ObjectNotFoundError:
        raise bedrock_validation(
            f"The S3 object {source.uri} does not exist or is not accessible."
        ) from None


def load_text(objects: ObjectStore, text: TextInput, limits: ContentLimits) -> str:
    """The text to embed: the inline value, or the S3 object decoded as UTF-8 within limits."""
    if text.value is not None:
        return text.value
    assert text.source is not None  # the schema requires exactly one of value and source
    data = read_source(objects, text.source, limits.text_max_bytes, "text")
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise bedrock_validation(
            f"The text object {text.source.uri} is not valid UTF-8 (invalid byte at offset "
            f"{err.start})."
        ) from None
    if not decoded:
        raise bedrock_validation(f"The text object {text.source.uri} is empty.")
    if limits.text_max_chars is not None and len(decoded) > limits.text_max_chars:
        raise bedrock_validation(
            f"The text object {text.source.uri} holds {len(decoded)} characters, over the "
            f"{limits.text_max_chars}-character limit of {limits.operation}."
        )
    return decoded


def load_image(objects: ObjectStore, image: ImageInput, limits: ContentLimits) -> np.ndarray:
    """The image's pixels, ``(H, W, 3)`` uint8, after checking its declared format."""
    data = read_source(objects, image.source, limits.image_max_bytes, "image")
    where = describe(image.source)
    actual = media.sniff_image_format(data)
    if actual is None:
        raise bedrock_validation(f"The image is not a PNG, JPEG, GIF or WebP file ({where}).")
    if actual != image.image_format:
        raise bedrock_validation(
            f"The image format {image.image_format} does not match the image data, which is "
            f"{actual} ({where})."
        )
    try:
        return media.decode_image(data)
    except media.MediaError as err:
        raise _invalid(err, where) from None


def load_audio_or_video(
    objects: ObjectStore, content: AudioInput | VideoInput, limits: ContentLimits
) -> LoadedMedia:
    """An audio or video file checked for its container, streams and duration (not decoded)."""
    is_audio = isinstance(content, AudioInput)
    kind = "audio" if is_audio else "video"
    declared = content.audio_format if isinstance(content, AudioInput) else content.video_format
    max_bytes = limits.audio_max_bytes if is_audio else limits.video_max_bytes
    data = read_source(objects, content.source, max_bytes, kind)
    where = describe(content.source)
    try:
        info = media.probe_media(data)
    except media.MediaError as err:
        raise _invalid(err, where) from None
    if not _CONTAINERS[declared] & set(info.container.split(",")):
        raise bedrock_validation(
            f"The {kind} format {declared} does not match the file, whose container is "
            f"{info.container} ({where})."
        )
    if not (info.has_audio if is_audio else info.has_video):
        raise bedrock_validation(f"The {kind} file holds no {kind} stream ({where}).")
    if info.duration_seconds > limits.media_max_seconds + DURATION_TOLERANCE_SECONDS:
        advice = " Use StartAsyncInvoke for longer media." if limits is SYNC_LIMITS else ""
        raise bedrock_validation(
            f"The {kind} is {info.duration_seconds:.1f} seconds long; {limits.operation} accepts "
            f"at most {limits.media_max_seconds:g} seconds ({where}).{advice}"
        )
    return LoadedMedia(data, info)


def decoded_samples(loaded: LoadedMedia, where: str) -> np.ndarray:
    """The file's sound as mono float32 at :data:`AUDIO_SAMPLE_RATE`; empty without audio."""
    if not loaded.info.has_audio:
        return np.zeros(0, dtype=np.float32)
    try:
        return media.decoded_audio(loaded.data, AUDIO_SAMPLE_RATE)
    except media.MediaError as err:
        raise _invalid(err, where) from None


def decoded_frames(loaded: LoadedMedia, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The file's sampled frames as ``(timestamps, frames)``; see ``media.decoded_video_frames``."""
    try:
        timestamps, frames = media.decoded_video_frames(loaded.data)
    except media.MediaError as err:
        raise _invalid(err, where) from None
    if not len(frames):
        raise bedrock_validation(f"The video holds no decodable frame ({where}).")
    return timestamps, frames


def _invalid(err: media.MediaError, where: str) -> ServiceError:
    return bedrock_validation(f"{err} ({where})")
