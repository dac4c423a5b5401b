"""Synthetic media for tests and the demo corpus: seeded, generated locally, never downloaded.

Every generator returns the encoded file as bytes; a caller that wants a file writes them with
``Path.write_bytes``. The same seed and arguments give the same content: images and WAV/FLAC
bytes are identical across runs, and compressed audio and video are encoded with FFmpeg's
bit-exact flags. Different seeds give content that is easy to tell apart: a different pattern
and palette for images, a different tone for audio, different colours and motion for video.

Audio and video are encoded by the FFmpeg binary that the ``imageio-ffmpeg`` package ships. Raw
samples and frames go in through a pipe; FFmpeg writes its output into a private temporary
directory (MP4, MKV, WebM, FLAC and MP3 headers are only complete when the muxer can seek back),
which is removed before the function returns.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

IMAGE_FORMATS = ("png", "jpeg", "gif", "webp", "bmp", "tiff")
AUDIO_FORMATS = ("wav", "mp3", "ogg", "flac")
VIDEO_FORMATS = ("mp4", "mov", "webm", "mkv")

_PILLOW_FORMAT = {
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
}
_H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
_AAC = ("-c:a", "aac", "-b:a", "64k")
_VORBIS = ("-c:a", "libvorbis", "-q:a", "2")
_VP8 = ("-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k")
_AUDIO_CODEC_ARGS = {
    "wav": ("-c:a", "pcm_s16le"),
    "mp3": ("-c:a", "libmp3lame", "-b:a", "64k"),
    "ogg": _VORBIS,
    "flac": ("-c:a", "flac"),
}
# (video codec options, audio codec options) per container.
_VIDEO_CODEC_ARGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "mp4": (_H264, _AAC),
    "mov": (_H264, _AAC),
    "mkv": (_H264, _AAC),
    # WebM allows only VP8/VP9/AV1 with Vorbis/Opus; VP8 in realtime mode is the fastest of them.
    "webm": (_VP8, _VORBIS),
}
# Without these FFmpeg stamps its version and encoder settings into the file, so the bytes
# would change with the FFmpeg build rather than with the content.
_BITEXACT = ("-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact")
_TONE_AMPLITUDE = 0.5
_FFMPEG_TIMEOUT_SECONDS = 300


class MediaEncodingError(RuntimeError):
    """FFmpeg failed to encode generated media; the message carries FFmpeg's own error output."""


def sample_pixels(seed: int, width: int = 64, height: int = 48) -> np.ndarray:
    """A picture that belongs to ``seed``: a two-colour gradient, stripes and three rectangles.

    Returns an ``(height, width, 3)`` uint8 RGB array. Angles, colours, stripe frequency and
    rectangle placement all come from the seed, so two seeds give visibly different images and
    the same seed always gives the same pixels.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    rng = np.random.default_rng(_seed_sequence("image", seed))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xs / max(width - 1, 1), ys / max(height - 1, 1)
    angle = rng.uniform(0.0, np.pi)
    ramp = (np.cos(angle) * u + np.sin(angle) * v + 1.0) / 2.0
    start, end = rng.uniform(0, 255, size=(2, 3))
    picture = start + (end - start) * ramp[..., None]
    stripe_angle, stripe_frequency = rng.uniform(0.0, np.pi), rng.uniform(2.0, 8.0)
    phase = (np.cos(stripe_angle) * u + np.sin(stripe_angle) * v) * stripe_frequency * 2 * np.pi
    picture *= (0.75 + 0.25 * np.sin(phase))[..., None]
    for _ in range(3):
        x0, x1 = np.sort(rng.integers(0, width + 1, size=2))
        y0, y1 = np.sort(rng.integers(0, height + 1, size=2))
        picture[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)] = rng.uniform(0, 255, size=3)
    return np.clip(picture, 0, 255).round().astype(np.uint8)


def encoded_image(pixels: np.ndarray, image_format: str) -> bytes:
    """``pixels`` (an ``(H, W, 3)`` uint8 RGB array) encoded as an ``image_format`` file.

    JPEG and WebP are lossy (quality 90); GIF is reduced to an adaptive 256-colour palette.
    """
    pillow_format = _PILLOW_FORMAT.get(image_format)
    if pillow_format is None:
        raise ValueError(f"unknown image format {image_format!r}; expected one of {IMAGE_FORMATS}")
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    if image_format == "gif":
        image = image.quantize(
            colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
    buffer = io.BytesIO()
    options = {"quality": 90} if image_format in ("jpeg", "webp") else {}
    image.save(buffer, format=pillow_format, **options)
    return buffer.getvalue()


def sample_image(seed: int, image_format: str = "png", width: int = 64, height: int = 48) -> bytes:
    """The picture of :func:`sample_pixels` for ``seed``, encoded as ``image_format``."""
    return encoded_image(sample_pixels(seed, width, height), image_format)


def tone_frequency(seed: int) -> float:
    """The pitch in Hz of the tone that belongs to ``seed``.

    Seeds step round a cycle of fifths over three octaves above 220 Hz, so consecutive seeds are
    at least five semitones apart and 36 seeds pass before a pitch repeats.
    """
    return 220.0 * 2.0 ** (((seed * 7) % 36) / 12.0)


def tone_samples(seed: int, seconds: float, sample_rate: int = 16_000) -> np.ndarray:
    """The mono waveform of ``seed``'s tone: float32 samples in [-1, 1], ``seconds`` long.

    The fundamental of :func:`tone_frequency` plus a quieter second harmonic, with 10 ms fades at
    both ends so the clip starts and stops without a click.
    """
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {seconds}")
    count = round(seconds * sample_rate)
    t = np.arange(count, dtype=np.float64) / sample_rate
    frequency = tone_frequency(seed)
    wave = np.sin(2 * np.pi * frequency * t) + 0.3 * np.sin(4 * np.pi * frequency * t)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.01)
    return (_TONE_AMPLITUDE / 1.3 * wave * fade).astype(np.float32)


def sample_audio(
    seed: int, seconds: float, audio_format: str = "wav", sample_rate: int = 16_000
) -> bytes:
    """``seconds`` of ``seed``'s tone (see :func:`tone_samples`), encoded as ``audio_format``.

    WAV is 16-bit PCM, MP3 64 kbit/s, Ogg is Vorbis, FLAC lossless; all mono at ``sample_rate``.
    """
    codec_args = _AUDIO_CODEC_ARGS.get(audio_format)
    if codec_args is None:
        raise ValueError(f"unknown audio format {audio_format!r}; expected one of {AUDIO_FORMATS}")
    pcm = _pcm16(tone_samples(seed, seconds, sample_rate))
    raw_input = ("-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0")
    return _ffmpeg_output(audio_format, [*raw_input, *codec_args], stdin=pcm)


def sample_video_frames(
    seed: int, seconds: float, width: int = 160, height: int = 120, fps: int = 10
) -> np.ndarray:
    """The frames of ``seed``'s clip: ``(N, height, width, 3)`` uint8 RGB, ``N = seconds × fps``.

    A coloured square bounces across a background whose hue drifts over time, so a clip's
    segments differ from each other and clips with different seeds differ throughout.
    """
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"duration and frame rate must be positive, got {seconds} s at {fps} fps")
    rng = np.random.default_rng(_seed_sequence("video", seed))
    count = max(1, round(seconds * fps))
    t = np.arange(count, dtype=np.float64) / fps
    base, swing = rng.uniform(40, 215, size=3), rng.uniform(20, 40, size=3)
    periods = rng.uniform(20.0, 60.0, size=3)
    background = base + swing * np.sin(2 * np.pi * t[:, None] / periods)
    side = max(2, min(width, height) // 3)
    velocity = rng.uniform(10.0, 40.0, size=2) * rng.choice([-1.0, 1.0], size=2)
    origin = rng.uniform(0, 1, size=2) * (width - side, height - side)
    x = _bounce(origin[0] + velocity[0] * t, width - side)
    y = _bounce(origin[1] + velocity[1] * t, height - side)
    square_colour = rng.uniform(0, 255, size=3)
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    frames[:] = np.clip(background, 0, 255).astype(np.uint8)[:, None, None, :]
    for index, (left, top) in enumerate(zip(x.astype(int), y.astype(int), strict=True)):
        frames[index, top : top + side, left : left + side] = square_colour.astype(np.uint8)
    return frames


def sample_video(
    seed: int,
    seconds: float,
    video_format: str = "mp4",
    *,
    width: int = 160,
    height: int = 120,
    fps: int = 10,
    with_audio: bool = True,
) -> bytes:
    """``seconds`` of ``seed``'s clip (see :func:`sample_video_frames`) as a ``video_format`` file.

    With ``with_audio`` the file also carries ``seed``'s tone (:func:`tone_samples`) as a mono
    audio track of the same length; without it the file has a video stream only. MP4, MOV and
    MKV hold H.264 and AAC, WebM holds VP8 and Vorbis. ``width`` and ``height`` must be even
    (H.264 in 4:2:0 needs that).
    """
    codecs = _VIDEO_CODEC_ARGS.get(video_format)
    if codecs is None:
        raise ValueError(f"unknown video format {video_format!r}; expected one of {VIDEO_FORMATS}")
    if width % 2 or height % 2:
        raise ValueError(f"frame size must be even, got {width}x{height}")
    frames = sample_video_frames(seed, seconds, width, height, fps)
    video_input = ("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}")
    args: list[str] = [*video_input, "-r", str(fps), "-i", "pipe:0"]
    video_codec, audio_codec = codecs
    extra_files: dict[str, bytes] = {}
    if with_audio:
        audio_rate = 16_000
        extra_files["tone.pcm"] = _pcm16(tone_samples(seed, len(frames) / fps, audio_rate))
        args += ["-f", "s16le", "-ar", str(audio_rate), "-ac", "1", "-i", "{dir}/tone.pcm"]
        args += audio_codec
    args += ["-g", str(2 * fps), *video_codec]
    return _ffmpeg_output(video_format, args, stdin=frames.tobytes(), extra_files=extra_files)


def truncated(data: bytes, keep_fraction: float) -> bytes:
    """The first ``keep_fraction`` (0–1) of ``data``: a file cut off as by a failed download."""
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be within [0, 1], got {keep_fraction}")
    return data[: int(len(data) * keep_fraction)]


def corrupted(data: bytes, seed: int, byte_count: int = 64) -> bytes:
    """``data`` with ``byte_count`` bytes past its first quarter overwritten by seeded noise.

    The header survives, so the file is still recognised, but its content no longer decodes
    cleanly: a file damaged in storage rather than cut short.
    """
    if byte_count < 0:
        raise ValueError(f"byte_count must not be negative, got {byte_count}")
    start = len(data) // 4
    end = min(len(data), start + byte_count)
    noise = np.random.default_rng(_seed_sequence("corrupt", seed)).bytes(end - start)
    return data[:start] + noise + data[end:]


def garbage(seed: int, size: int = 4096) -> bytes:
    """``size`` seeded random bytes: content that is no known media format."""
    return np.random.default_rng(_seed_sequence("garbage", seed)).bytes(size)


def _seed_sequence(kind: str, seed: int) -> np.random.SeedSequence:
    # A per-kind stream, so image seed 3 and video seed 3 do not share their random draws.
    return np.random.SeedSequence([seed, *kind.encode()])


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767).round().astype("<i2").tobytes()


def _bounce(position: np.ndarray, span: float) -> np.ndarray:
    """Positions reflected back into [0, span], as for an object bouncing between two walls."""
    if span <= 0:
        return np.zeros_like(position)
    folded = np.mod(position, 2 * span)
    return np.where(folded > span, 2 * span - folded, folded)


def _ffmpeg_output(
    extension: str,
    args: list[str],
    *,
    stdin: bytes,
    extra_files: dict[str, bytes] | None = None,
) -> bytes:
    """Runs FFmpeg with ``args`` (inputs and codecs) and returns the ``.extension`` file it wrote.

    ``{dir}`` in an argument stands for the private working directory, where ``extra_files``
    are written first; the directory is removed afterwards whether FFmpeg succeeded or not.
    """
    with tempfile.TemporaryDirectory(prefix="novaflow-media-") as workdir:
        for name, content in (extra_files or {}).items():
            Path(workdir, name).write_bytes(content)
        output = Path(workdir, f"out.{extension}")
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(),
            *("-hide_banner", "-loglevel", "error", "-y"),
            *(arg.replace("{dir}", workdir) for arg in args),
            *_BITEXACT,
            *("-map_metadata", "-1", str(output)),
        ]
        completed = subprocess.run(
            command, input=stdin, capture_output=True, timeout=_FFMPEG_TIMEOUT_SECONDS, check=False
        )
        if completed.returncode != 0 or not output.exists():
            message = completed.stderr.decode(errors="replace").strip()
            raise MediaEncodingError(f"ffmpeg could not write {extension}: {message}")
        return output.read_bytes()
