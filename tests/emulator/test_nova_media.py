"""Decoding what the Nova stand-in is given: sniffing, pixels, durations, samples and frames."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from emulator.nova.media import (
    IMAGE_FORMATS,
    MediaError,
    decode_image,
    decoded_audio,
    decoded_video_frames,
    probe_media,
    sniff_image_format,
)
from tasks.demo import sample_media

CLIP_SECONDS = 4.0
LONG_CLIP_SECONDS = 45.0
AUDIO_FORMATS = ("wav", "mp3", "ogg", "flac")
VIDEO_FORMATS = ("mp4", "mov", "mkv", "webm")


@pytest.fixture(scope="module")
def clips() -> dict[str, bytes]:
    """Short clips of seed 5's tone and pictures in every generated format."""
    media = {fmt: sample_media.sample_audio(5, CLIP_SECONDS, fmt) for fmt in AUDIO_FORMATS}
    media |= {fmt: sample_media.sample_video(5, CLIP_SECONDS, fmt) for fmt in VIDEO_FORMATS}
    media["silent-mp4"] = sample_media.sample_video(5, CLIP_SECONDS, "mp4", with_audio=False)
    return media


@pytest.fixture(scope="module")
def long_clip() -> bytes:
    return sample_media.sample_video(6, LONG_CLIP_SECONDS, "mp4")


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_each_nova_image_format_is_sniffed(image_format: str) -> None:
    assert sniff_image_format(sample_media.sample_image(1, image_format)) == image_format


@pytest.mark.parametrize(
    "data",
    [
        sample_media.sample_image(1, "bmp"),
        sample_media.sample_image(1, "tiff"),
        b"",
        b"RIFF\x00\x00\x00\x00WAVE",
        sample_media.garbage(1),
    ],
    ids=["bmp", "tiff", "empty", "riff-wave", "garbage"],
)
def test_other_content_is_not_sniffed_as_an_image(data: bytes) -> None:
    assert sniff_image_format(data) is None


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_images_decode_to_rgb_pixels(image_format: str) -> None:
    original = sample_media.sample_pixels(2, 64, 48)

    pixels = decode_image(sample_media.encoded_image(original, image_format))

    assert pixels.shape == (48, 64, 3)
    assert pixels.dtype == np.uint8
    assert np.abs(pixels.astype(int) - original).mean() < 6


def test_png_decodes_exactly() -> None:
    original = sample_media.sample_pixels(3, 30, 20)

    assert np.array_equal(decode_image(sample_media.encoded_image(original, "png")), original)


def test_transparent_pixels_come_out_white() -> None:
    image = Image.new("RGBA", (2, 1), (10, 20, 30, 255))
    image.putpixel((1, 0), (0, 0, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")

    pixels = decode_image(buffer.getvalue())

    assert pixels[0, 0].tolist() == [10, 20, 30]
    assert pixels[0, 1].tolist() == [255, 255, 255]


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_truncated_images_raise_a_media_error(image_format: str) -> None:
    data = sample_media.truncated(sample_media.sample_image(4, image_format), 0.6)

    with pytest.raises(MediaError, match=f"The {image_format} image could not be decoded"):
        decode_image(data)


@pytest.mark.parametrize("image_format", ["png", "jpeg"])
def test_damaged_images_raise_a_media_error(image_format: str) -> None:
    data = sample_media.corrupted(sample_media.sample_image(4, image_format), seed=0)

    with pytest.raises(MediaError, match=f"The {image_format} image could not be decoded"):
        decode_image(data)


@pytest.mark.parametrize("data", [sample_media.sample_image(1, "bmp"), sample_media.garbage(2)])
def test_content_that_is_no_nova_image_raises_a_media_error(data: bytes) -> None:
    with pytest.raises(MediaError, match="not a PNG, JPEG, GIF or WebP"):
        decode_image(data)


def test_media_error_is_a_value_error() -> None:
    assert issubclass(MediaError, ValueError)


@pytest.mark.parametrize(
    ("name", "has_audio", "has_video", "container"),
    [
        ("wav", True, False, "wav"),
        ("mp3", True, False, "mp3"),
        ("ogg", True, False, "ogg"),
        ("flac", True, False, "flac"),
        ("mp4", True, True, "mov,mp4,m4a,3gp,3g2,mj2"),
        ("mov", True, True, "mov,mp4,m4a,3gp,3g2,mj2"),
        ("mkv", True, True, "matroska,webm"),
        ("webm", True, True, "matroska,webm"),
        ("silent-mp4", False, True, "mov,mp4,m4a,3gp,3g2,mj2"),
    ],
)
def test_probe_reports_duration_and_streams(
    clips: dict[str, bytes], name: str, has_audio: bool, has_video: bool, container: str
) -> None:
    info = probe_media(clips[name])

    assert info.duration_seconds == pytest.approx(CLIP_SECONDS, abs=0.1)
    assert (info.has_audio, info.has_video, info.container) == (has_audio, has_video, container)


def test_probe_measures_a_long_clip(long_clip: bytes) -> None:
    assert probe_media(long_clip).duration_seconds == pytest.approx(LONG_CLIP_SECONDS, abs=0.1)


@pytest.mark.parametrize(
    "data",
    [b"", sample_media.garbage(3), sample_media.sample_image(1, "webp")[:8]],
    ids=["empty", "garbage", "image-header"],
)
def test_undecodable_bytes_raise_a_media_error(data: bytes) -> None:
    for read in (probe_media, decoded_audio, decoded_video_frames):
        with pytest.raises(MediaError, match="The media file could not be read"):
            read(data)


def test_a_truncated_mp4_raises_a_media_error(clips: dict[str, bytes]) -> None:
    # ffmpeg writes the mp4 index at the end, so a cut-off download has none.
    with pytest.raises(MediaError, match="could not be read"):
        probe_media(sample_media.truncated(clips["mp4"], 0.7))


def test_damaged_audio_and_video_raise_a_media_error(clips: dict[str, bytes]) -> None:
    damaged = sample_media.corrupted(clips["mp4"], seed=0, byte_count=2000)

    with pytest.raises(MediaError, match="audio could not be decoded, it is damaged"):
        decoded_audio(damaged)
    with pytest.raises(MediaError, match="video could not be decoded, it is damaged"):
        decoded_video_frames(damaged)


@pytest.mark.parametrize("name", ["wav", "mp3", "ogg", "flac", "mp4", "webm"])
def test_audio_decodes_to_mono_samples_of_the_tone(clips: dict[str, bytes], name: str) -> None:
    samples = decoded_audio(clips[name])

    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert len(samples) / 8000 == pytest.approx(CLIP_SECONDS, abs=0.1)
    assert np.abs(samples).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    peak = np.fft.rfftfreq(len(samples), 1 / 8000)[np.argmax(spectrum)]
    assert peak == pytest.approx(sample_media.tone_frequency(5), rel=0.01)


def test_audio_can_be_decoded_at_another_rate(clips: dict[str, bytes]) -> None:
    assert len(decoded_audio(clips["wav"], sample_rate=16_000)) == pytest.approx(64_000, abs=200)


def test_a_file_without_audio_gives_no_samples(clips: dict[str, bytes]) -> None:
    samples = decoded_audio(clips["silent-mp4"])

    assert samples.shape == (0,)
    assert samples.dtype == np.float32


@pytest.mark.parametrize("name", VIDEO_FORMATS)
def test_video_frames_are_sampled_at_the_requested_rate(clips: dict[str, bytes], name: str) -> None:
    timestamps, frames = decoded_video_frames(clips[name])

    assert frames.shape == (8, 32, 32, 3)
    assert frames.dtype == np.uint8
    assert timestamps.dtype == np.float64
    assert timestamps == pytest.approx(np.arange(8) * 0.5, abs=0.06)


def test_frame_rate_and_size_can_be_chosen(clips: dict[str, bytes]) -> None:
    timestamps, frames = decoded_video_frames(clips["mp4"], frames_per_second=1.0, size=16)

    assert frames.shape == (4, 16, 16, 3)
    assert timestamps == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.06)


def test_sampled_frames_show_the_clip(clips: dict[str, bytes]) -> None:
    _, frames = decoded_video_frames(clips["mp4"], size=160)
    expected = sample_media.sample_video_frames(5, CLIP_SECONDS)[::5]

    # Scaled to a square, so compare colours over the whole frame rather than pixel by pixel.
    assert np.abs(frames.mean(axis=(1, 2)) - expected.mean(axis=(1, 2))).max() < 8


def test_audio_only_files_have_no_frames(clips: dict[str, bytes]) -> None:
    with pytest.raises(MediaError, match="no video stream"):
        decoded_video_frames(clips["mp3"])
