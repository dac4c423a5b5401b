"""Images for Nova: accepted files pass untouched, others are converted or downscaled, bad ones
fail with a code a run can quarantine."""

from __future__ import annotations

import io
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from tasks.demo.sample_media import IMAGE_FORMATS, garbage, sample_image, truncated
from tasks.media.images import (
    MAX_INLINE_BASE64_BYTES,
    PreparationError,
    PreparedImage,
    base64_length,
    prepared_image,
)

NOVA_FORMATS = ("png", "jpeg", "gif", "webp")
RESAMPLED_FORMAT = {
    "png": "png",
    "jpeg": "jpeg",
    "gif": "png",
    "webp": "webp",
    "bmp": "png",
    "tiff": "png",
}


def decoded(prepared: PreparedImage) -> Image.Image:
    image = Image.open(io.BytesIO(prepared.data))
    image.load()
    return image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


@pytest.mark.parametrize("image_format", NOVA_FORMATS)
def test_accepted_formats_within_the_limit_are_sent_byte_for_byte(image_format: str) -> None:
    data = sample_image(3, image_format, width=64, height=48)

    prepared = prepared_image(data, max_side_px=64)

    assert prepared == PreparedImage(data, image_format, 64, 48)  # type: ignore[arg-type]


@pytest.mark.parametrize("image_format", ["bmp", "tiff"])
def test_other_formats_are_converted_to_png_without_losing_pixels(image_format: str) -> None:
    data = sample_image(4, image_format, width=40, height=30)

    prepared = prepared_image(data, max_side_px=4096)

    assert (prepared.image_format, prepared.width, prepared.height) == ("png", 40, 30)
    original = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(np.asarray(decoded(prepared).convert("RGB")), original)


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_oversize_images_are_downscaled_keeping_their_aspect(image_format: str) -> None:
    data = sample_image(5, image_format, width=120, height=80)

    prepared = prepared_image(data, max_side_px=60)

    assert prepared.image_format == RESAMPLED_FORMAT[image_format]
    assert (prepared.width, prepared.height) == (60, 40)
    image = decoded(prepared)
    assert image.size == (60, 40)
    assert image.format.lower() == prepared.image_format


def test_portrait_images_are_bounded_by_their_height() -> None:
    prepared = prepared_image(sample_image(6, "png", width=30, height=90), max_side_px=45)

    assert (prepared.width, prepared.height) == (15, 45)


def test_a_downscaled_jpeg_is_turned_upright_by_its_exif_orientation() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(buffer, "JPEG", exif=exif.tobytes())

    prepared = prepared_image(buffer.getvalue(), max_side_px=32)

    assert (prepared.width, prepared.height) == (16, 32)


def test_transparency_survives_conversion() -> None:
    rgba = np.zeros((20, 40, 4), np.uint8)
    rgba[:, :20] = (255, 0, 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "TIFF")

    image = decoded(prepared_image(buffer.getvalue(), max_side_px=4096))

    assert image.mode == "RGBA"
    assert image.getpixel((5, 5)) == (255, 0, 0, 255)
    assert image.getpixel((35, 5))[3] == 0


def test_sixteen_bit_images_keep_their_contrast_when_converted() -> None:
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (16, 1))
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, "PNG")

    image = decoded(prepared_image(buffer.getvalue(), max_side_px=32))

    # Pillow's plain conversion would clip everything above 255 to white.
    row = np.asarray(image)[0]
    assert row[0] < 8
    assert row[-1] > 247
    assert 100 < row[len(row) // 2] < 156


@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
@pytest.mark.parametrize("keep_fraction", [0.05, 0.5, 0.9])
def test_truncated_images_are_reported_as_truncated(
    image_format: str, keep_fraction: float
) -> None:
    data = truncated(sample_image(7, image_format, width=64, height=48), keep_fraction)

    with pytest.raises(PreparationError) as raised:
        prepared_image(data, max_side_px=4096)

    assert raised.value.code == "image_truncated"
    assert "complete copy" in str(raised.value)


def test_a_png_cut_off_before_its_end_chunk_is_truncated() -> None:
    data = sample_image(8, "png")

    with pytest.raises(PreparationError) as raised:
        prepared_image(data[:-12], max_side_px=4096)

    assert raised.value.code == "image_truncated"


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes_are_unsupported(seed: int) -> None:
    with pytest.raises(PreparationError) as raised:
        prepared_image(garbage(seed), max_side_px=4096)

    assert raised.value.code == "image_unsupported"
    assert "PNG, JPEG, GIF or WebP" in str(raised.value)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (b"", "empty"),
        (b"%PDF-1.7\n" + bytes(100), "PDF"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"\x00\x00\x00\x18ftypheic" + bytes(100), "HEIC"),
    ],
)
def test_non_images_are_unsupported_and_named(data: bytes, named: str) -> None:
    with pytest.raises(PreparationError) as raised:
        prepared_image(data, max_side_px=4096)

    assert raised.value.code == "image_unsupported"
    assert named in str(raised.value)


def test_an_image_declaring_too_many_pixels_is_refused_before_decoding() -> None:
    header = struct.pack(">IIBBBBB", 40_000, 40_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")

    with pytest.raises(PreparationError) as raised:
        prepared_image(data, max_side_px=4096)

    assert raised.value.code == "image_too_large"


def test_an_image_over_the_inline_limit_is_shrunk_until_it_fits() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    limit = base64_length(len(buffer.getvalue())) // 3

    prepared = prepared_image(buffer.getvalue(), max_side_px=4096, max_base64_bytes=limit)

    assert prepared.base64_length <= limit
    assert prepared.image_format == "png"
    assert prepared.width < 300
    assert abs(prepared.width / prepared.height - 1.5) < 0.05


def test_an_image_that_cannot_be_shrunk_under_the_limit_is_too_large() -> None:
    with pytest.raises(PreparationError) as raised:
        prepared_image(sample_image(9, "png"), max_side_px=4096, max_base64_bytes=40)

    assert raised.value.code == "image_too_large"
    assert "inline limit" in str(raised.value)


def test_the_default_inline_limit_is_novas_25_mb_of_base64() -> None:
    assert MAX_INLINE_BASE64_BYTES == 25_000_000
    assert base64_length(3) == 4
    assert base64_length(4) == 8


def test_preparation_errors_survive_pickling_with_code_and_message() -> None:
    error = PreparationError("pdf_encrypted", "The PDF is protected by a password.")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.code, str(copy)) == ("pdf_encrypted", "The PDF is protected by a password.")
    assert isinstance(copy, ValueError)
