"""Media facts: the length, streams and Nova format of audio and video files, and a specific code
for each way a file can be unusable."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest

from tasks.demo.sample_media import garbage, sample_audio, sample_video, truncated
from tasks.media.facts import MediaFacts, media_facts
from tasks.media.images import PreparationError

SECONDS = 2.0
AUDIO_FORMATS = ("wav", "mp3", "ogg")
VIDEO_FORMATS = ("mp4", "mov", "webm", "mkv")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    files: dict[str, bytes] = {
        f"tone.{fmt}": sample_audio(2, SECONDS, fmt) for fmt in AUDIO_FORMATS
    }
    files["tone.flac"] = sample_audio(2, SECONDS, "flac")
    for fmt in VIDEO_FORMATS:
        files[f"clip.{fmt}"] = sample_video(2, SECONDS, fmt)
    files["silent.mp4"] = sample_video(3, SECONDS, "mp4", with_audio=False)
    files["mov_named.mp4"] = files["clip.mov"]
    files["garbage.mp3"] = garbage(4)
    files["cut.mp4"] = truncated(files["clip.mp4"], 0.5)
    files["empty.wav"] = b""
    paths = {}
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths[name] = root / name
    paths["voice.m4a"] = _m4a(root / "voice.m4a")
    paths["no_samples.wav"] = _silent_wav(root / "no_samples.wav")
    return paths


def _m4a(path: Path) -> Path:
    """One second of AAC in an MP4 ('M4A ') container, written with PyAV."""
    with av.open(str(path), "w", format="ipod") as container:
        stream = container.add_stream("aac", rate=16_000, layout="mono")
        for index in range(16):
            samples = np.zeros((1, 1024), dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16_000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def _silent_wav(path: Path) -> Path:
    """A valid WAV header with no samples: a 0-second file."""
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16_000)
    return path


def code_of(path: Path, modality: str) -> tuple[str, str]:
    with pytest.raises(PreparationError) as raised:
        media_facts(str(path), modality)  # type: ignore[arg-type]
    return raised.value.code, str(raised.value)


@pytest.mark.parametrize("fmt", AUDIO_FORMATS)
def test_audio_formats_nova_takes(media: dict[str, Path], fmt: str) -> None:
    facts = media_facts(str(media[f"tone.{fmt}"]), "audio")

    assert facts.nova_format == fmt
    assert (facts.has_audio, facts.has_video) == (True, False)
    assert facts.duration_seconds == pytest.approx(SECONDS, abs=0.1)
    assert facts.container_format


@pytest.mark.parametrize("fmt", VIDEO_FORMATS)
def test_video_formats_nova_takes(media: dict[str, Path], fmt: str) -> None:
    facts = media_facts(str(media[f"clip.{fmt}"]), "video")

    assert facts.nova_format == fmt
    assert (facts.has_audio, facts.has_video) == (True, True)
    assert facts.duration_seconds == pytest.approx(SECONDS, abs=0.1)


def test_the_file_not_its_name_decides_the_format(media: dict[str, Path]) -> None:
    assert media_facts(str(media["mov_named.mp4"]), "video").nova_format == "mov"


def test_a_video_without_sound_is_still_video(media: dict[str, Path]) -> None:
    facts = media_facts(str(media["silent.mp4"]), "video")

    assert facts == MediaFacts(
        duration_seconds=facts.duration_seconds,
        container_format="mov,mp4,m4a,3gp,3g2,mj2",
        has_audio=False,
        has_video=True,
        nova_format="mp4",
    )


@pytest.mark.parametrize(("name", "named"), [("tone.flac", "FLAC"), ("voice.m4a", "M4A")])
def test_audio_formats_nova_refuses_say_which_it_takes(
    media: dict[str, Path], name: str, named: str
) -> None:
    code, message = code_of(media[name], "audio")

    assert code == "media_unsupported_format"
    assert named in message
    assert "MP3, WAV, OGG" in message


def test_video_files_are_not_audio(media: dict[str, Path]) -> None:
    assert code_of(media["clip.mp4"], "audio")[0] == "media_unsupported_format"


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        ("garbage.mp3", "audio"),
        ("cut.mp4", "video"),
        ("empty.wav", "audio"),
        ("tone.wav", "video"),
        ("silent.mp4", "audio"),
    ],
)
def test_unreadable_media_or_a_missing_stream_is_undecodable(
    media: dict[str, Path], name: str, modality: str
) -> None:
    assert code_of(media[name], modality)[0] == "media_undecodable"


def test_zero_seconds_is_empty(media: dict[str, Path]) -> None:
    assert code_of(media["no_samples.wav"], "audio")[0] == "media_empty"


def test_a_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        media_facts(str(tmp_path / "gone.mp3"), "audio")
