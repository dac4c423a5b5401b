"""What kind of media a corpus file is: by its extension first, then by its first bytes.

Part of corpus input (see :mod:`tasks.corpus.resolve`). Pure functions: no I/O.
"""

from __future__ import annotations

import codecs
import os
from pathlib import PurePosixPath

from tasks.corpus.manifest import Rejection
from tasks.records import Modality

SNIFF_BYTES = 4096
"""How many leading bytes content sniffing looks at, the same for local files and S3 objects."""

EXTENSION_MODALITIES: dict[str, Modality] = {
    **dict.fromkeys(
        (".txt", ".md", ".markdown", ".csv", ".json", ".html", ".htm", ".rst", ".log"), "text"
    ),
    ".pdf": "pdf",
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"), "image"),
    **dict.fromkeys((".mp3", ".wav", ".ogg", ".flac", ".m4a", ".aac"), "audio"),
    **dict.fromkeys(
        (".mp4", ".mov", ".mkv", ".webm", ".flv", ".mpeg", ".mpg", ".wmv", ".3gp", ".avi"),
        "video",
    ),
}
"""The modality of each known file extension (lower case, with the dot)."""

_IMAGE_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",  # JPEG
    b"GIF87a",
    b"GIF89a",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)
_AUDIO_SIGNATURES = (b"ID3", b"OggS", b"fLaC")
_RIFF_FORMS: dict[bytes, Modality] = {b"WEBP": "image", b"WAVE": "audio", b"AVI ": "video"}
# ISO-BMFF is video unless its major brand says audio-only (M4A and its DRM/audiobook kin).
_AUDIO_ONLY_BRANDS = (b"M4A ", b"M4B ", b"M4P ", b"F4A ")
_EBML = b"\x1a\x45\xdf\xa3"


def modality_by_extension(name: str) -> Modality | None:
    """The modality that ``name``'s extension (case-insensitive) stands for; None if unknown.
    The extension is ``PurePosixPath(name).suffix``: from the last "." of the last component,
    when that "." is neither its first nor its last character ("..txt" has ".txt")."""
    base = name.rpartition("/")[2]
    if base in ("", "."):
        # PurePosixPath drops trailing "/" and "." components: the name is found before them.
        base = PurePosixPath(name).name
    dot = base.rfind(".")
    return EXTENSION_MODALITIES.get(base[dot:].lower()) if dot > 0 else None


def sniffed_modality(head: bytes) -> Modality | None:
    """The modality the first bytes of a file betray: a known signature, else text when they
    decode as UTF-8 and hold no NUL byte. None when nothing matches (or ``head`` is empty)."""
    if not head:
        return None
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(_IMAGE_SIGNATURES) or _is_bmp(head):
        return "image"
    if head.startswith(b"RIFF"):
        return _RIFF_FORMS.get(head[8:12])
    if head.startswith(_AUDIO_SIGNATURES) or _is_mpeg_audio_frame(head):
        return "audio"
    if head[4:8] == b"ftyp":
        return "audio" if head[8:12] in _AUDIO_ONLY_BRANDS else "video"
    if head.startswith(_EBML):
        return "video"
    if _is_utf8_text(head):
        return "text"
    return None


def infer_modality(name: str, head: bytes) -> Modality | None:
    """What ``name`` holds: by its extension first, then by sniffing ``head`` (its first
    bytes). None means neither told: the item cannot be embedded without a declared modality."""
    return modality_by_extension(name) or sniffed_modality(head)


def unsupported_type(name: str) -> Rejection:
    """The ``unsupported_type`` rejection of a file whose modality cannot be inferred."""
    extension = os.path.splitext(name)[1] or "(none)"
    return Rejection(
        "unsupported_type",
        f"cannot tell what {name} holds: extension {extension} is not a known media type and "
        "its first bytes match no known format; declare its 'modality' to embed it anyway",
    )


def _is_bmp(head: bytes) -> bool:
    # "BM" alone could start a text file; the four reserved zero bytes after the size cannot.
    return head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00"


def _is_mpeg_audio_frame(head: bytes) -> bool:
    # 11 set bits of frame sync: MP3 (and the other MPEG audio layers) and AAC in ADTS.
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


def _is_utf8_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    # Not final: the head may end in the middle of a multi-byte character.
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True
