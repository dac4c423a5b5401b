"""Images made ready for Nova: a format it accepts, a bounded size, and a clear error when the
input cannot be used.

Nova takes PNG, JPEG, GIF and WebP, inline up to 25,000,000 characters of base64
(aws-apis.md §1.2, §1.3, §1.7). An accepted file that is small enough and decodes completely is
sent byte for byte as it came, so its vector depends only on its content; anything else is
decoded with Pillow and re-encoded: other raster formats become PNG, images whose longer side is
over the limit are downscaled.

Choices the contract leaves open:

* Multi-picture JPEG files (MPO, written by many cameras) start with an ordinary JPEG and are
  sent as JPEG.
* Of an animated GIF or WebP only the first frame survives a downscale; unchanged files keep all
  frames, and what Nova does with them is Nova's business.
* A re-encoded JPEG first takes the rotation its EXIF orientation tag asks for, because the tag
  does not survive re-encoding.
* When an image that is within the pixel limit is still over the inline limit, it is shrunk
  further, at most a few times, before ``image_too_large`` is raised.
* Only raster formats Pillow recognises by a file signature are converted; formats it can only
  guess at (TGA, PCX) and those it reads through external programs (EPS) count as unsupported.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal, get_args

from PIL import Image, ImageOps, UnidentifiedImageError

NovaImageFormat = Literal["png", "jpeg", "gif", "webp"]
NOVA_IMAGE_FORMATS: tuple[NovaImageFormat, ...] = get_args(NovaImageFormat)
MAX_INLINE_BASE64_BYTES = 25_000_000
RESAMPLED_JPEG_QUALITY = 90
RESAMPLED_WEBP_QUALITY = 90

# Pillow's format name -> the Nova format of a file that may be sent unchanged.
_SENT_AS_IS: dict[str, NovaImageFormat] = {
    "PNG": "png",
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "GIF": "gif",
    "WEBP": "webp",
}
_CONVERTED_TO_PNG = ("AVIF", "BMP", "ICO", "JPEG2000", "PPM", "QOI", "SGI", "TIFF")
# Pillow opens MPO files through its JPEG plugin, so "MPO" is not a name Image.open accepts.
_OPENED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", *_CONVERTED_TO_PNG)
# Leading bytes of formats novaflow reads: a file that starts like one but will not open is damaged.
_READABLE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# Formats people commonly try that Pillow cannot read here: named in the error message.
_KNOWN_SIGNATURES = (
    (b"%PDF", "a PDF document"),
    (b"<svg", "an SVG drawing (vector graphics; render it to PNG first)"),
    (b"<?xml", "an XML file (an SVG drawing? render it to PNG first)"),
    (b"%!PS", "a PostScript file"),
)
_SHRINK_ATTEMPTS = 3
_SHRINK_MARGIN = 0.9


class PreparationError(ValueError):
    """Bad input. ``code`` is stable (e.g. ``"pdf_encrypted"``), ``str(err)`` a message a person
    can act on. Instances pickle, so they can be returned from worker processes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[PreparationError], tuple[str, str]]:
        return (type(self), (self.code, self.message))

    def __repr__(self) -> str:
        return f"PreparationError({self.code!r}, {self.message!r})"


@dataclass(frozen=True)
class PreparedImage:
    """An image ready to be embedded: ``data`` is the encoded file, in ``image_format`` (the Nova
    ``format`` value), ``width`` × ``height`` pixels as stored in the file."""

    data: bytes
    image_format: NovaImageFormat
    width: int
    height: int

    @property
    def base64_length(self) -> int:
        """Characters ``data`` takes once base64-encoded: what Nova's inline limit counts."""
        return base64_length(len(self.data))


def base64_length(byte_count: int) -> int:
    """Characters that ``byte_count`` bytes take in padded base64."""
    return 4 * math.ceil(byte_count / 3)


def prepared_image(
    data: bytes, max_side_px: int, *, max_base64_bytes: int = MAX_INLINE_BASE64_BYTES
) -> PreparedImage:
    """``data`` (an image file) as Nova should receive it.

    PNG, JPEG, GIF and WebP files that decode completely, whose longer side is at most
    ``max_side_px`` and whose base64 fits in ``max_base64_bytes`` come back unchanged. Other
    formats Pillow reads (BMP, TIFF, …) are converted to PNG; larger images are downscaled,
    keeping their aspect ratio, and re-encoded in their own format (GIF as PNG).

    Raises :class:`PreparationError` with code ``image_unsupported`` (not an image, or a format
    novaflow does not read), ``image_truncated`` (cut short or damaged) or ``image_too_large``
    (too many pixels to decode, or over the inline limit even after downscaling).
    """
    if max_side_px < 1:
        raise ValueError(f"max_side_px must be positive, got {max_side_px}")
    image = _opened_image(data)
    with image:
        source_format = image.format or ""
        as_is = _SENT_AS_IS.get(source_format)
        fits = max(image.size) <= max_side_px
        if not fits and source_format in ("JPEG", "MPO"):
            # Decodes at 1/2, 1/4 or 1/8 scale when that still covers the target: a large photo
            # then never occupies its full size in memory.
            image.draft(image.mode, _scaled_size(image.size, max_side_px))
        _load_fully(image, source_format)
        if source_format == "PNG" and data.rfind(b"IEND") == -1:
            # Pillow stops after the last pixel row; a PNG cut off just before its end chunk
            # decodes here but is not a complete file to hand on.
            raise PreparationError(
                "image_truncated", _damaged_message("PNG", "no IEND chunk at the end")
            )
        if as_is is not None and fits and base64_length(len(data)) <= max_base64_bytes:
            width, height = image.size
            return PreparedImage(data=data, image_format=as_is, width=width, height=height)
        output_format = _output_format(source_format)
        return _fitted(
            _normalised(image, output_format), output_format, max_side_px, max_base64_bytes
        )


def encoded_image(
    pixels: Image.Image, image_format: Literal["png", "jpeg", "webp"], *, quality: int = 90
) -> PreparedImage:
    """``pixels`` encoded as ``image_format`` (``quality`` applies to JPEG and WebP).

    ``pixels`` must be in a mode the format stores (JPEG: L or RGB; PNG and WebP: L, LA, RGB
    or RGBA).
    """
    buffer = io.BytesIO()
    if image_format == "jpeg":
        pixels.save(buffer, format="JPEG", quality=quality)
    elif image_format == "webp":
        pixels.save(buffer, format="WEBP", quality=quality)
    else:
        pixels.save(buffer, format="PNG")
    width, height = pixels.size
    return PreparedImage(
        data=buffer.getvalue(), image_format=image_format, width=width, height=height
    )


def _opened_image(data: bytes) -> Image.Image:
    if not data:
        raise PreparationError("image_unsupported", "The image file is empty (0 bytes).")
    try:
        return Image.open(io.BytesIO(data), formats=_OPENED_FORMATS)
    except Image.DecompressionBombError as err:
        raise PreparationError(
            "image_too_large",
            f"The image has too many pixels to decode safely ({err}). Downscale it below "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels.",
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as err:
        damaged = _signature_format(data)
        if damaged is not None:
            raise PreparationError("image_truncated", _damaged_message(damaged, err)) from err
        raise PreparationError("image_unsupported", _unsupported_message(data)) from err


def _signature_format(data: bytes) -> str | None:
    for signature, name in _READABLE_SIGNATURES:
        if data.startswith(signature):
            return name
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _damaged_message(format_name: str, err: BaseException | str) -> str:
    return (
        f"The {format_name} file is truncated or damaged and could not be decoded ({err}); "
        "replace it with a complete copy."
    )


def _unsupported_message(data: bytes) -> str:
    accepted = "PNG, JPEG, GIF or WebP (sent as they are) or BMP, TIFF, ICO, PPM, JPEG 2000, QOI"
    head = data[:64].lstrip()
    for signature, what in _KNOWN_SIGNATURES:
        if head.startswith(signature):
            return f"The file is {what}, not an image novaflow reads: it must be {accepted}."
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1"):
        return f"HEIC/HEIF images are not supported: convert it to JPEG. Accepted: {accepted}."
    return f"The file is not an image in a format novaflow reads: it must be {accepted}."


def _load_fully(image: Image.Image, source_format: str) -> None:
    # Pillow decodes lazily: load() reads every byte, so a truncated file fails here, not later.
    try:
        image.load()
    except Image.DecompressionBombError as err:
        raise PreparationError("image_too_large", f"The image has too many pixels: {err}") from err
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as err:
        raise PreparationError(
            "image_truncated", _damaged_message(source_format or "image", err)
        ) from err


def _output_format(source_format: str) -> Literal["png", "jpeg", "webp"]:
    as_is = _SENT_AS_IS.get(source_format)
    if as_is in ("jpeg", "webp"):
        return as_is
    return "png"


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _normalised(image: Image.Image, output_format: str) -> Image.Image:
    """``image`` upright and in a mode ``output_format`` stores and Pillow resamples well."""
    upright = ImageOps.exif_transpose(image) if output_format == "jpeg" else image
    if upright.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        upright = _eight_bit(upright)
    if output_format == "jpeg":
        return upright if upright.mode in ("L", "RGB") else upright.convert("RGB")
    if upright.mode in ("L", "LA", "RGB", "RGBA"):
        return upright
    return upright.convert("RGBA" if _has_alpha(upright) else "RGB")


def _eight_bit(image: Image.Image) -> Image.Image:
    # Pillow's own conversion clips 16-bit and float samples at 255; stretch the range instead.
    low, high = image.convert("F").getextrema()
    scale = 255.0 / (high - low) if high > low else 0.0
    return image.convert("F").point(lambda value: (value - low) * scale).convert("L")


def _scaled_size(size: tuple[int, int], max_side_px: int) -> tuple[int, int]:
    width, height = size
    longer = max(width, height)
    if longer <= max_side_px:
        return size
    scale = max_side_px / longer
    return max(1, min(max_side_px, round(width * scale))), max(
        1, min(max_side_px, round(height * scale))
    )


def _fitted(
    pixels: Image.Image,
    output_format: Literal["png", "jpeg", "webp"],
    max_side_px: int,
    max_base64_bytes: int,
) -> PreparedImage:
    """``pixels`` encoded within ``max_side_px`` and, shrinking further if needed, the limit."""
    size = _scaled_size(pixels.size, max_side_px)
    for _ in range(1 + _SHRINK_ATTEMPTS):
        resized = pixels if size == pixels.size else _resized(pixels, size)
        quality = RESAMPLED_JPEG_QUALITY if output_format == "jpeg" else RESAMPLED_WEBP_QUALITY
        prepared = encoded_image(resized, output_format, quality=quality)
        if prepared.base64_length <= max_base64_bytes:
            return prepared
        # Encoded size grows roughly with the pixel count, so scale the area by the overshoot.
        scale = math.sqrt(max_base64_bytes / prepared.base64_length) * _SHRINK_MARGIN
        size = (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
    raise PreparationError(
        "image_too_large",
        f"The image is still {prepared.base64_length:,} base64 characters as a "
        f"{prepared.width}x{prepared.height} {output_format.upper()}, over Nova's inline limit "
        f"of {max_base64_bytes:,}; reduce its size or detail.",
    )


def _resized(pixels: Image.Image, size: tuple[int, int]) -> Image.Image:
    # reducing_gap first shrinks by whole factors (fast box filter), then finishes with Lanczos.
    return pixels.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
