"""The synthetic media generators: right formats, right lengths, seeded, nothing left behind."""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tasks.demo import sample_media

PILLOW_NAMES = {
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
}
AUDIO_CODECS = {"wav": "pcm_s16le", "mp3": "mp3", "ogg": "vorbis", "flac": "flac"}
VIDEO_CODECS = {"mp4": "h264", "mov": "h264", "mkv": "h264", "webm": "vp8"}
CLIP_SECONDS = 3.0


def dominant_frequency(samples: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / sample_rate)[np.argmax(spectrum)])


@pytest.fixture(scope="module")
def audio_clips() -> dict[str, bytes]:
    return {fmt: sample_media.sample_audio(4, CLIP_SECONDS, fmt) for fmt in AUDIO_CODECS}


@pytest.fixture(scope="module")
def video_clips() -> dict[str, bytes]:
    return {fmt: sample_media.sample_video(4, CLIP_SECONDS, fmt) for fmt in VIDEO_CODECS}


@pytest.mark.parametrize("image_format", sample_media.IMAGE_FORMATS)
def test_images_are_encoded_in_the_requested_format_and_size(image_format: str) -> None:
    data = sample_media.sample_image(7, image_format, width=40, height=30)

    with Image.open(io.BytesIO(data)) as image:
        assert image.format == PILLOW_NAMES[image_format]
        assert image.size == (40, 30)


def test_same_seed_gives_the_same_image_and_other_seeds_visibly_different_ones() -> None:
    first = sample_media.sample_pixels(1)

    assert np.array_equal(first, sample_media.sample_pixels(1))
    assert first.shape == (48, 64, 3)
    assert first.dtype == np.uint8
    for other_seed in range(2, 8):
        difference = np.abs(first.astype(int) - sample_media.sample_pixels(other_seed)).mean()
        assert difference > 20, f"seed {other_seed} looks like seed 1"


def test_png_keeps_the_pixels_exactly() -> None:
    pixels = sample_media.sample_pixels(3, 20, 10)

    with Image.open(io.BytesIO(sample_media.encoded_image(pixels, "png"))) as image:
        assert np.array_equal(np.asarray(image.convert("RGB")), pixels)


def test_unknown_formats_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown image format"):
        sample_media.sample_image(1, "heic")
    with pytest.raises(ValueError, match="unknown audio format"):
        sample_media.sample_audio(1, 1.0, "aiff")
    with pytest.raises(ValueError, match="unknown video format"):
        sample_media.sample_video(1, 1.0, "avi")


@pytest.mark.parametrize("audio_format", AUDIO_CODECS)
def test_audio_has_the_requested_codec_length_and_tone(
    audio_clips: dict[str, bytes], audio_format: str
) -> None:
    with av.open(io.BytesIO(audio_clips[audio_format])) as container:
        (stream,) = container.streams.audio
        assert stream.codec_context.codec.canonical_name == AUDIO_CODECS[audio_format]
        assert stream.channels == 1
        assert container.duration / 1e6 == pytest.approx(CLIP_SECONDS, abs=0.1)
        samples = np.concatenate([frame.to_ndarray().reshape(-1) for frame in container.decode()])
        heard = dominant_frequency(samples.astype(np.float64), stream.sample_rate)

    assert heard == pytest.approx(sample_media.tone_frequency(4), rel=0.01)


def test_consecutive_seeds_have_tones_at_least_five_semitones_apart() -> None:
    for seed in range(40):
        ratio = sample_media.tone_frequency(seed + 1) / sample_media.tone_frequency(seed)
        assert abs(12 * np.log2(ratio)) >= 5 - 1e-9


@pytest.mark.parametrize("audio_format", AUDIO_CODECS)
def test_audio_encoding_is_reproducible(audio_clips: dict[str, bytes], audio_format: str) -> None:
    assert sample_media.sample_audio(4, CLIP_SECONDS, audio_format) == audio_clips[audio_format]


@pytest.mark.parametrize("video_format", VIDEO_CODECS)
def test_video_has_moving_pictures_and_a_tone(
    video_clips: dict[str, bytes], video_format: str
) -> None:
    with av.open(io.BytesIO(video_clips[video_format])) as container:
        (video,) = container.streams.video
        assert video.codec_context.codec.canonical_name == VIDEO_CODECS[video_format]
        assert (video.width, video.height) == (160, 120)
        assert len(container.streams.audio) == 1
        assert container.duration / 1e6 == pytest.approx(CLIP_SECONDS, abs=0.1)
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video)]

    assert len(frames) == pytest.approx(CLIP_SECONDS * 10, abs=1)
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 1, "the picture does not move"


def test_video_without_audio_has_no_audio_stream() -> None:
    data = sample_media.sample_video(4, 1.0, "mp4", with_audio=False)

    with av.open(io.BytesIO(data)) as container:
        assert len(container.streams.video) == 1
        assert len(container.streams.audio) == 0


def test_video_frames_differ_between_seeds() -> None:
    first = sample_media.sample_video_frames(1, 1.0, 32, 24, 5)
    second = sample_media.sample_video_frames(2, 1.0, 32, 24, 5)

    assert first.shape == (5, 24, 32, 3)
    assert np.array_equal(first, sample_media.sample_video_frames(1, 1.0, 32, 24, 5))
    assert np.abs(first.astype(int) - second).mean() > 10


def test_odd_frame_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="even"):
        sample_media.sample_video(1, 1.0, width=161)


def test_encoding_leaves_no_temporary_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    sample_media.sample_audio(1, 0.5, "mp3")
    sample_media.sample_video(1, 0.5, "mp4")

    assert list(tmp_path.iterdir()) == []


def test_ffmpeg_failure_is_reported_with_its_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    failing = shutil.which("false")
    assert failing is not None
    monkeypatch.setattr(sample_media.imageio_ffmpeg, "get_ffmpeg_exe", lambda: failing)

    with pytest.raises(sample_media.MediaEncodingError, match="could not write mp3"):
        sample_media.sample_audio(1, 0.5, "mp3")
    assert list(tmp_path.iterdir()) == []


def test_truncated_keeps_a_prefix() -> None:
    data = bytes(range(100))

    assert sample_media.truncated(data, 0.25) == data[:25]
    assert sample_media.truncated(data, 1.0) == data
    assert sample_media.truncated(data, 0.0) == b""
    with pytest.raises(ValueError, match="keep_fraction"):
        sample_media.truncated(data, 1.5)


def test_corrupted_keeps_the_header_and_length_but_changes_the_content() -> None:
    data = sample_media.sample_image(1, "png", 100, 100)

    damaged = sample_media.corrupted(data, seed=3, byte_count=50)

    assert len(damaged) == len(data)
    assert damaged[: len(data) // 4] == data[: len(data) // 4]
    assert damaged != data
    assert damaged == sample_media.corrupted(data, seed=3, byte_count=50)


def test_garbage_is_seeded_random_bytes() -> None:
    assert len(sample_media.garbage(1, 300)) == 300
    assert sample_media.garbage(1) == sample_media.garbage(1)
    assert sample_media.garbage(1) != sample_media.garbage(2)
