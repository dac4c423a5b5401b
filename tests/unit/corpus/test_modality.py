"""Inferring what a file holds: the extension first, then the first bytes of real media files."""

from __future__ import annotations

from pathlib import PurePosixPath

import pymupdf
import pytest

from tasks.corpus.modality import EXTENSION_MODALITIES, SNIFF_BYTES, modality_by_extension
from tasks.corpus.resolve import infer_modality
from tasks.demo.sample_media import (
    AUDIO_FORMATS,
    IMAGE_FORMATS,
    VIDEO_FORMATS,
    sample_audio,
    sample_image,
    sample_video,
)
from tasks.records import Modality


def tiny_pdf() -> bytes:
    document = pymupdf.open()
    document.new_page()
    return document.tobytes()


@pytest.fixture(scope="module")
def media() -> dict[str, tuple[bytes, Modality]]:
    """One real file per format, keyed by format name, with the modality it must sniff as."""
    samples: dict[str, tuple[bytes, Modality]] = {"pdf": (tiny_pdf(), "pdf")}
    for image_format in IMAGE_FORMATS:
        samples[image_format] = (sample_image(11, image_format), "image")
    for audio_format in AUDIO_FORMATS:
        samples[audio_format] = (sample_audio(12, 1.0, audio_format), "audio")
    for video_format in VIDEO_FORMATS:
        samples[video_format] = (sample_video(13, 1.0, video_format), "video")
    samples["text"] = ("Grüße, 世界: plain UTF-8 text\n".encode(), "text")
    return samples


@pytest.mark.parametrize(
    ("name", "modality"),
    [
        ("notes.txt", "text"),
        ("README.md", "text"),
        ("guide.markdown", "text"),
        ("table.csv", "text"),
        ("data.json", "text"),
        ("page.HTML", "text"),
        ("page.htm", "text"),
        ("index.rst", "text"),
        ("server.log", "text"),
        ("docs/Report.PDF", "pdf"),
        ("a.png", "image"),
        ("a.jpg", "image"),
        ("a.jpeg", "image"),
        ("a.gif", "image"),
        ("a.webp", "image"),
        ("a.bmp", "image"),
        ("a.tif", "image"),
        ("a.tiff", "image"),
        ("a.mp3", "audio"),
        ("a.wav", "audio"),
        ("a.ogg", "audio"),
        ("a.flac", "audio"),
        ("a.m4a", "audio"),
        ("a.aac", "audio"),
        ("a.mp4", "video"),
        ("a.mov", "video"),
        ("a.mkv", "video"),
        ("a.webm", "video"),
        ("a.flv", "video"),
        ("a.mpeg", "video"),
        ("a.mpg", "video"),
        ("a.wmv", "video"),
        ("a.3gp", "video"),
        ("s3-key/with.dots/clip.AVI", "video"),
        ("archive.zip", None),
        ("no-extension", None),
    ],
)
def test_the_extension_decides_when_known(name: str, modality: Modality | None) -> None:
    # An empty head leaves nothing to sniff: the answer comes from the name alone.
    assert infer_modality(name, b"") == modality


@pytest.mark.parametrize(
    "sample",
    [
        "pdf",
        *IMAGE_FORMATS,
        *AUDIO_FORMATS,
        *VIDEO_FORMATS,
        "text",
    ],
)
def test_content_decides_when_the_extension_is_unknown(
    media: dict[str, tuple[bytes, Modality]], sample: str
) -> None:
    content, modality = media[sample]

    assert infer_modality("upload-7f3a", content[:SNIFF_BYTES]) == modality
    assert infer_modality("upload.bin", content[:SNIFF_BYTES]) == modality


def test_the_extension_wins_over_the_content(media: dict[str, tuple[bytes, Modality]]) -> None:
    assert infer_modality("photo.png", media["text"][0]) == "image"
    assert infer_modality("notes.txt", media["png"][0]) == "text"


@pytest.mark.parametrize(
    ("head", "modality"),
    [
        (b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00", "audio"),  # ISO-BMFF, audio-only brand
        (b"\x00\x00\x00\x18ftyp3gp4\x00\x00\x00\x00", "video"),
        (b"RIFF\x10\x00\x00\x00AVI LIST", "video"),
        (b"\xff\xf1\x50\x80\x02\x1f\xfc", "audio"),  # AAC in ADTS frames
        (b"\xff\xfb\x90\x64\x00", "audio"),  # an MP3 frame without an ID3 tag
        ("naïve text cut mid-charact\u00e9".encode()[:-1], "text"),  # a head may end mid-character
        (b"RIFF\x10\x00\x00\x00XYZW", None),
        (b"text until a NUL\x00byte", None),
        (b"\xc3\x28 not UTF-8", None),
        (bytes(range(256)), None),
        (b"", None),
    ],
)
def test_edge_cases_of_sniffing(head: bytes, modality: Modality | None) -> None:
    assert infer_modality("unnamed", head) == modality


@pytest.mark.parametrize(
    "name",
    [
        "notes.txt",
        "docs/Report.PDF",
        "..notes.txt",
        "...txt",
        ".txt",
        "docs/.txt",
        "notes.",
        "notes..txt",
        "archive.tar.gz",
        "clip.txt/",
        "clip.txt/.",
        "clip.txt//./",
        "dir.txt/..",
        "a.txt/b",
        "..",
        ".",
        "/",
        "",
        "s3-key/with.dots/clip.AVI",
        "MiXeD.JpEg",
    ],
)
def test_the_extension_is_the_one_pure_paths_see(name: str) -> None:
    # The lookup is hand-rolled for speed; PurePosixPath.suffix is the definition it keeps.
    expected = EXTENSION_MODALITIES.get(PurePosixPath(name).suffix.lower())

    assert modality_by_extension(name) == expected
