"""Decoding of the media the Nova stand-in is given: images with Pillow, audio and video with PyAV.

Everything works on bytes held in memory. Content that cannot be decoded raises
:class:`MediaError`, whose message is written to be returned to the caller as it is.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import av
import av.error
import numpy as np
from PIL import Image

IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")

_PILLOW_NAMES = {"png": "PNG", "jpeg": "JPEG", "gif": "GIF", "webp": "WEBP"}
# PyAV reports a container's duration in FFmpeg's AV_TIME_BASE units (microseconds).
_AV_TIME_BASE = 1_000_000


class MediaError(ValueError):
    """Content that cannot be decoded; str(err) is a message fit to return to a caller."""


@dataclass(frozen=True)
class MediaInfo:
    """What a container holds.

    ``duration_seconds`` is the length of the longest stream; ``has_audio`` / ``has_video`` say
    whether there is at least one audio / video stream (cover art in an audio file does not
    count as video); ``container`` is PyAV's format name, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``,
    ``"matroska,webm"``, ``"mp3"``, ``"wav"`` or ``"ogg"``.
    """

    duration_seconds: float
    has_audio: bool
    has_video: bool
    container: str


def sniff_image_format(data: bytes) -> str | None:
    """The image format that ``data``'s leading magic bytes announce: one of :data:`IMAGE_FORMATS`.

    None when the bytes start like none of them. Only the signature is checked; whether the
    rest of the file decodes is :func:`decode_image`'s business.
    """
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_image(data: bytes) -> np.ndarray:
    """The pixels of a PNG, JPEG, GIF or WebP image: an ``(H, W, 3)`` uint8 RGB array.

    Transparent areas are composited onto white; of an animated GIF or WebP only the first
    frame is used. Raises :class:`MediaError` for other formats, truncated or corrupt files.
    """
    image_format = sniff_image_format(data)
    if image_format is None:
        raise MediaError("The image is not a PNG, JPEG, GIF or WebP file.")
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_NAMES[image_format]]) as image:
            # load() decodes every byte now, so a truncated file fails here and not later.
            image.load()
            return _rgb_pixels(image)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise MediaError(f"The {image_format} image could not be decoded: {err}") from err


def probe_media(data: bytes) -> MediaInfo:
    """The duration and kinds of streams of an audio or video file given as bytes.

    The duration comes from the container's header; when the header has none (streams written
    to a pipe, some WebM files) it is measured from the last packet's end. Raises
    :class:`MediaError` when the bytes are no media container or hold no audio or video.
    """
    with _opened(data) as container:
        has_audio = bool(container.streams.audio)
        has_video = bool(_video_streams(container))
        if not has_audio and not has_video:
            raise MediaError("The file holds no audio or video stream.")
        if container.duration is not None and container.duration > 0:
            duration = container.duration / _AV_TIME_BASE
        else:
            duration = _demuxed_duration(container)
        return MediaInfo(
            duration_seconds=float(duration),
            has_audio=has_audio,
            has_video=has_video,
            container=container.format.name,
        )


def decoded_audio(data: bytes, sample_rate: int = 8000) -> np.ndarray:
    """The file's first audio stream as mono float32 samples in [-1, 1] at ``sample_rate`` Hz.

    Sample ``i`` is the sound at ``i / sample_rate`` seconds from the start of the stream.
    Returns an empty array when the file has no audio stream. Raises :class:`MediaError` when
    the file or its audio cannot be decoded.
    """
    with _opened(data) as container:
        if not container.streams.audio:
            return np.zeros(0, dtype=np.float32)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
        except av.error.FFmpegError as err:
            raise MediaError(
                f"The audio could not be decoded, it is damaged: {_reason(err)}"
            ) from err
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.clip(np.concatenate(chunks), -1.0, 1.0).astype(np.float32, copy=False)


def decoded_video_frames(
    data: bytes, frames_per_second: float = 2.0, size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Frames of the file's first video stream, sampled at about ``frames_per_second``.

    Returns ``(timestamps, frames)``: float64 seconds from the start of the stream, shape
    ``(N,)``, and the frames scaled to ``size`` × ``size`` RGB, uint8, shape
    ``(N, size, size, 3)``. For each sampling instant ``k / frames_per_second`` the first
    frame shown at or after it is taken (each frame at most once). Raises :class:`MediaError`
    when the file has no video stream or its video cannot be decoded.
    """
    if frames_per_second <= 0 or size < 1:
        raise ValueError(f"need a positive rate and size, got {frames_per_second} and {size}")
    with _opened(data) as container:
        streams = _video_streams(container)
        if not streams:
            raise MediaError("The file holds no video stream.")
        stream = streams[0]
        stream.thread_type = "AUTO"
        origin = _stream_origin_seconds(stream)
        timestamps: list[float] = []
        frames: list[np.ndarray] = []
        next_instant = 0.0
        # Half a frame at 1000 fps: absorbs rounding in timestamps stored in coarse time bases.
        tolerance = 5e-4
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                moment = frame.time - origin
                if moment + tolerance < next_instant:
                    continue
                small = frame.reformat(
                    width=size, height=size, format="rgb24", interpolation="AREA"
                )
                timestamps.append(max(moment, 0.0))
                frames.append(small.to_ndarray())
                instants_passed = math.floor((moment + tolerance) * frames_per_second)
                next_instant = (instants_passed + 1) / frames_per_second
        except av.error.FFmpegError as err:
            raise MediaError(
                f"The video could not be decoded, it is damaged: {_reason(err)}"
            ) from err
    if not frames:
        return np.zeros(0, dtype=np.float64), np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.asarray(timestamps, dtype=np.float64), np.stack(frames)


@contextmanager
def _opened(data: bytes) -> Iterator[av.container.InputContainer]:
    """``data`` opened as a PyAV input container; open failures become :class:`MediaError`."""
    try:
        container = av.open(io.BytesIO(data), mode="r")
    except av.error.FFmpegError as err:
        raise MediaError(f"The media file could not be read: {_reason(err)}") from err
    try:
        yield container
    finally:
        container.close()


def _reason(err: Exception) -> str:
    # PyAV's messages end with the name of the file it was given, which for bytes is meaningless.
    if isinstance(err, av.error.FFmpegError) and err.strerror:
        return err.strerror
    return str(err)


def _video_streams(container: av.container.InputContainer) -> list[av.VideoStream]:
    """Video streams that carry moving pictures, not an audio file's embedded cover art."""
    return [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]


def _stream_origin_seconds(stream: av.stream.Stream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


# Kept apart from novaflow's own copy on purpose: the stand-in follows the API reference on
# its own, so a mistake on either side shows up as a failing test.
def _demuxed_duration(container: av.container.InputContainer) -> float:
    """The latest packet end over the audio and video streams, in seconds from their start."""
    streams = [*container.streams.audio, *_video_streams(container)]
    origins = {stream.index: _stream_origin_seconds(stream) for stream in streams}
    end = 0.0
    try:
        for packet in container.demux(streams):
            if packet.pts is None or packet.time_base is None:
                continue
            finish = packet.pts + (packet.duration or 0)
            end = max(end, float(finish * packet.time_base) - origins[packet.stream.index])
    except av.error.FFmpegError as err:
        raise MediaError(f"The media file could not be read: {_reason(err)}") from err
    return end


def _rgb_pixels(image: Image.Image) -> np.ndarray:
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)
