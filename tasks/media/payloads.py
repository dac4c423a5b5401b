"""What gets embedded, built from a file: the one place that turns images, rendered pages and
clips into Nova payloads, for indexing and for queries alike."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from tasks.media.facts import media_facts
from tasks.media.images import PreparedImage, prepared_image
from tasks.nova.requests import Payload


def image_payload(image: PreparedImage, detail_level: str) -> Payload:
    """A prepared image (a photo, or a PDF page with ``DOCUMENT_IMAGE``) as an inline payload."""
    return Payload(
        kind="image", data=image.data, media_format=image.image_format, detail_level=detail_level
    )


def image_file_payload(path: Path, max_side_px: int) -> Payload:
    """An image file, converted or downscaled as Nova needs, at ``STANDARD_IMAGE`` detail."""
    return image_payload(prepared_image(path.read_bytes(), max_side_px), "STANDARD_IMAGE")


def media_file_payload(
    path: Path, kind: Literal["audio", "video"], s3_uri: str | None = None
) -> Payload:
    """A short clip: referenced in place when it lives in S3, else sent inline; its Nova
    ``format`` is read from the file itself."""
    facts = media_facts(str(path), kind)
    if s3_uri is not None:
        return Payload(kind=kind, s3_uri=s3_uri, media_format=facts.nova_format)
    return Payload(kind=kind, data=path.read_bytes(), media_format=facts.nova_format)
