"""What an audio or video file is, as far as Nova cares: its length, its streams, and the
``format`` value Nova needs for it (aws-apis.md §1.2, §1.7), read with PyAV.

Nova takes audio as MP3, WAV or Ogg and video as MP4, MOV, MKV, WebM, FLV, MPEG/MPG, WMV or
3GP. The format is read from the file, not its name, where the file says it: an MP4-family
file's ``ftyp`` brand tells MP4, MOV and 3GP apart, and a Matroska file with codecs other than
WebM's is MKV. Where the container alone cannot tell (Matroska with WebM codecs, MPEG program
streams), the file extension decides. M4A, FLAC, AAC, AVI, MPEG-TS and other containers are
``media_unsupported_format``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tasks.media.images import PreparationError

Modality = Literal["audio", "video"]
NOVA_AUDIO_FORMATS = ("mp3", "wav", "ogg")
NOVA_VIDEO_FORMATS = ("mp4", "mov", "mkv", "webm", "flv", "mpeg", "mpg", "wmv", "3gp")

# FFmpeg reports a container's duration in AV_TIME_BASE units (microseconds).
_AV_TIME_BASE = 1_000_000
_MP4_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"
_AUDIO_CONTAINERS = {"mp3": "mp3", "wav": "wav", "ogg": "ogg"}
_VIDEO_CONTAINERS = {"flv": "flv", "asf": "wmv", "mpeg": "mpeg"}
_QUICKTIME_BRANDS = ("qt",)
_3GP_BRANDS = ("3gp", "3g2", "3ge", "3gg", "3gs")
_AUDIO_ONLY_BRANDS = ("m4a", "m4b", "m4p")
_WEBM_CODECS = frozenset({"vp8", "vp9", "av1", "vorbis", "opus"})


@dataclass(frozen=True)
class MediaFacts:
    """What a media file holds.

    ``duration_seconds`` is the length of its longest stream; ``container_format`` is PyAV's
    (FFmpeg's) demuxer name, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"matroska,webm"``, ``"mp3"``;
    ``has_audio`` / ``has_video`` say whether it has a sound / moving-picture stream (an audio
    file's cover art is not video); ``nova_format`` is the Nova ``format`` value to send it
    with: mp3/wav/ogg for audio, mp4/mov/mkv/webm/flv/mpeg/mpg/wmv/3gp for video.
    """

    duration_seconds: float
    container_format: str
    has_audio: bool
    has_video: bool
    nova_format: str


def media_facts(path: str, modality: Modality) -> MediaFacts:
    """The facts of the media file at ``path``, to be embedded as ``modality``.

    Raises :class:`~tasks.media.images.PreparationError` with code ``media_undecodable`` (not a
    media file, damaged, or without a stream of the ``modality`` kind), ``media_unsupported_format``
    (a container Nova does not accept for ``modality``; the message lists those it does) or
    ``media_empty`` (it lasts 0 s); ``OSError`` when the file cannot be read (missing, no
    permission).
    """
    if modality not in ("audio", "video"):
        raise ValueError(f"modality must be 'audio' or 'video', got {modality!r}")
    with open(path, "rb"):
        pass  # a missing or unreadable file is the caller's problem, not the content's
    import av.error  # here, not at the top: ~90 ms and 16 MB that runs with no media never use

    try:
        container = av.open(path, mode="r")
    except av.error.FFmpegError as err:
        raise PreparationError(
            "media_undecodable",
            f"The file is not {modality} that FFmpeg can read ({_reason(err)}); it may be "
            "truncated, damaged or not media at all.",
        ) from err
    with container:
        has_audio = bool(container.streams.audio)
        has_video = bool(_moving_picture_streams(container))
        if not (has_audio if modality == "audio" else has_video):
            other = " (only video)" if has_video else " (only audio)" if has_audio else ""
            raise PreparationError(
                "media_undecodable",
                f"The file has no {modality} stream{other}, so it cannot be embedded as "
                f"{modality}.",
            )
        container_format = str(container.format.name)
        nova_format = _nova_format(container, container_format, modality, Path(path).suffix)
        duration = _duration_seconds(container)
    if not duration > 0:
        raise PreparationError("media_empty", f"The {modality} lasts 0 seconds: nothing to embed.")
    return MediaFacts(
        duration_seconds=duration,
        container_format=container_format,
        has_audio=has_audio,
        has_video=has_video,
        nova_format=nova_format,
    )


def _nova_format(container: Any, container_format: str, modality: Modality, suffix: str) -> str:
    extension = suffix.lower().lstrip(".")
    if modality == "audio":
        nova_format = _AUDIO_CONTAINERS.get(container_format)
        accepted = NOVA_AUDIO_FORMATS
    else:
        nova_format = _video_format(container, container_format, extension)
        accepted = NOVA_VIDEO_FORMATS
    if nova_format is None:
        kind = _format_description(container, container_format, extension)
        raise PreparationError(
            "media_unsupported_format",
            f"Nova does not accept {kind} as {modality}: it takes {modality} as "
            f"{', '.join(name.upper() for name in accepted)}. Convert the file to one of those.",
        )
    return nova_format


def _video_format(container: Any, container_format: str, extension: str) -> str | None:
    if container_format == _MP4_FAMILY:
        brand = _major_brand(container)
        if brand.startswith(_QUICKTIME_BRANDS):
            return "mov"
        if brand.startswith(_3GP_BRANDS):
            return "3gp"
        if brand.startswith(_AUDIO_ONLY_BRANDS):
            return None
        return "mp4"
    if container_format == "matroska,webm":
        codecs = {stream.codec_context.name for stream in container.streams}
        if codecs <= _WEBM_CODECS and extension != "mkv":
            return "webm"
        return "mkv"
    if container_format == "mpeg":
        return "mpg" if extension == "mpg" else "mpeg"
    return _VIDEO_CONTAINERS.get(container_format)


def _format_description(container: Any, container_format: str, extension: str) -> str:
    if container_format == _MP4_FAMILY and _major_brand(container).startswith(_AUDIO_ONLY_BRANDS):
        return "M4A (AAC audio in an MP4 container)"
    if container_format == _MP4_FAMILY:
        return "MP4/MOV files"
    names = {
        "flac": "FLAC",
        "aac": "raw AAC",
        "matroska,webm": "Matroska/WebM files",
        "mpegts": "MPEG transport streams",
        "avi": "AVI",
    }
    named = names.get(container_format)
    if named is None:
        named = f"the {container_format!r} format" + (f" (.{extension})" if extension else "")
    return named


def _major_brand(container: Any) -> str:
    return str(container.metadata.get("major_brand", "")).strip().lower()


def _moving_picture_streams(container: Any) -> list[Any]:
    """Video streams that carry moving pictures, not an audio file's embedded cover art."""
    import av.error

    return [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]


# Kept apart from the stand-in's copy on purpose: each side follows the API reference on its
# own, so a mistake on either side shows up as a failing test.
def _duration_seconds(container: Any) -> float:
    """The container's duration; when its header has none, the end of its last packet."""
    if container.duration is not None and container.duration > 0:
        return float(container.duration / _AV_TIME_BASE)
    import av.error

    streams = [*container.streams.audio, *_moving_picture_streams(container)]
    origins = {stream.index: _stream_start_seconds(stream) for stream in streams}
    end = 0.0
    try:
        for packet in container.demux(streams):
            if packet.pts is None or packet.time_base is None:
                continue
            finish = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            end = max(end, finish - origins[packet.stream.index])
    except av.error.FFmpegError as err:
        raise PreparationError(
            "media_undecodable",
            f"The file could not be read to its end ({_reason(err)}); it may be damaged.",
        ) from err
    return end if math.isfinite(end) else 0.0


def _stream_start_seconds(stream: Any) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _reason(err: Exception) -> str:
    import av.error

    # PyAV appends the file name to FFmpeg's message; the strerror alone reads better.
    if isinstance(err, av.error.FFmpegError) and err.strerror:
        return str(err.strerror)
    return str(err)
