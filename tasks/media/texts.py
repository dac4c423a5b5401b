"""Text made ready for Nova: bytes decoded without guessing silently, and cut into chunks that fit
its inline limit of 8,192 characters (aws-apis.md §1.2, §1.7).

Decoding never replaces a character: bytes that do not decode in the chosen encoding are an
error (``text_undecodable``), not a row of U+FFFD. A leading byte-order mark is never part of
the text.

Encoding detection uses charset_normalizer when it imports. For short Western European text it
ranks several single-byte code pages almost equally and then picks arbitrarily (cp1250 or cp1257
for French); novaflow breaks such near-ties in favour of cp1252, the usual legacy encoding of
Latin-script text and a superset of latin-1's printable characters.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from typing import Any

from tasks.media.images import PreparationError

# Byte-order marks, longest first: the UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters (Unicode category Cc) other than those ordinary text contains: tab, line
# feed, vertical tab, form feed, carriage return, and escape (colour codes in terminal logs).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
# More control characters than this share of the text means it is not text.
_MAX_CONTROL_SHARE = 0.05
# charset_normalizer scores within these margins of its best guess count as a tie.
_TIE_CHAOS, _TIE_COHERENCE = 0.1, 0.1
_PREFERRED_LEGACY_ENCODING = "cp1252"

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_LINE_BREAK = re.compile(r"[\r\n]\s*")
_WHITESPACE = re.compile(r"\s+")
_BREAKS = (_PARAGRAPH_BREAK, _LINE_BREAK, _WHITESPACE)


class _UndetectedError(Exception):
    """No encoding could be detected (or charset_normalizer is missing)."""


def decoded_text(data: bytes, declared_encoding: str | None = None) -> str:
    """``data`` as text: decoded with ``declared_encoding`` if given, else by its byte-order mark
    (UTF-8, UTF-16, UTF-32), else as strict UTF-8, else in the encoding charset_normalizer
    detects. The result is exactly what the bytes say, without a byte-order mark; line endings
    are kept as they are, so character offsets into it are stable.

    Raises :class:`~tasks.media.images.PreparationError` with code ``text_bad_encoding`` (the
    declared encoding is no codec Python knows), ``text_empty`` (nothing, or only whitespace),
    ``text_binary`` (NUL bytes, or more than 5 % control characters: not text) or
    ``text_undecodable`` (not valid in the declared or any detected encoding). UTF-16 or UTF-32
    without a byte-order mark must be declared: undeclared, its NUL bytes make it binary.
    """
    if declared_encoding is not None:
        encoding = _known_codec(declared_encoding)
    else:
        encoding = _bom_encoding(data)
    if not data.strip():
        raise PreparationError("text_empty", "The text is empty.")
    wide = encoding is not None and encoding.startswith(("utf-16", "utf-32"))
    if not wide and b"\x00" in data:
        # Without a UTF-16/32 encoding, a NUL byte is never part of text.
        raise PreparationError(
            "text_binary",
            "The file contains NUL bytes: it is binary, not text (or UTF-16/32 without a "
            "byte-order mark: declare its encoding).",
        )
    if encoding is None:
        encoding = _undeclared_encoding(data)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        raise PreparationError(
            "text_undecodable",
            f"The text is not valid {encoding}: {err.reason} at byte {err.start}. Declare its "
            "real encoding, or re-save it as UTF-8.",
        ) from err
    text = text.removeprefix("\ufeff")
    _check_is_text(text)
    return text


def text_chunks(text: str, max_chars: int) -> list[tuple[int, int]]:
    """``[start, end)`` character spans that cut ``text`` into chunks of at most ``max_chars``.

    Each chunk ends, by preference, after a paragraph break (a blank line), else after a line
    break, else after whitespace, else mid-word (never between a character and its combining
    marks); a break in the second half of the window is preferred to an earlier, stronger one,
    so chunks are not needlessly short. The whitespace at a break stays with the chunk before it.

    Spans are in order and touch each other, covering ``text`` from 0, except that whitespace
    is left out where it would make a chunk of its own: a trailing run, and a run that fills a
    whole chunk (``max_chars`` whitespace characters from where the next chunk would start).
    Every chunk holds at least one non-whitespace character; a text of only whitespace gives
    ``[]``.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    spans: list[tuple[int, int]] = []
    start, length = 0, len(text)
    while start < length:
        limit = start + max_chars
        if length <= limit:
            if not text[start:].isspace():
                spans.append((start, length))
            break
        window = text[start:limit]
        if window.isspace():
            # A whitespace run longer than a whole chunk: skip it rather than send a blank one.
            run = _WHITESPACE.match(text, start)
            start = run.end() if run else limit
            continue
        end = _chunk_end(text, start, limit)
        spans.append((start, end))
        start = end
    return spans


def _chunk_end(text: str, start: int, limit: int) -> int:
    """Where the chunk starting at ``start`` ends: a break found in ``text[start:limit]``."""
    window = text[start:limit]
    content_start = len(window) - len(window.lstrip())
    for earliest in (len(window) // 2, content_start + 1):
        for pattern in _BREAKS:
            last = None
            for match in pattern.finditer(window, content_start + 1):
                last = match
            if last is not None and last.end() >= earliest:
                return start + last.end()
    end = limit
    while end > start + content_start + 1 and unicodedata.combining(text[end]):
        end -= 1
    return end


def _known_codec(name: str) -> str:
    try:
        codec = codecs.lookup(name).name
    except LookupError as err:
        raise PreparationError(
            "text_bad_encoding",
            f"The declared encoding {name!r} is not one Python knows (e.g. 'utf-8', 'cp1252', "
            "'shift_jis'); correct the item's encoding.",
        ) from err
    # The -sig codec also drops a UTF-8 byte-order mark that a file declared as UTF-8 may have.
    return "utf-8-sig" if codec == "utf-8" else codec


def _bom_encoding(data: bytes) -> str | None:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return encoding
    return None


def _undeclared_encoding(data: bytes) -> str:
    try:
        data.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as err:
        utf8_error = err
    try:
        return _detected_encoding(data)
    except _UndetectedError as err:
        raise PreparationError(
            "text_undecodable",
            f"The text is not UTF-8 ({utf8_error.reason} at byte {utf8_error.start}) and its "
            f"encoding could not be detected ({err}). Declare its encoding, or re-save it as "
            "UTF-8.",
        ) from utf8_error


def _detected_encoding(data: bytes) -> str:
    try:
        import charset_normalizer
    except ImportError as err:
        raise _UndetectedError("charset_normalizer is not installed") from err
    matches: Any = charset_normalizer.from_bytes(data)
    best = matches.best()
    if best is None:
        raise _UndetectedError("no encoding decodes it sensibly")
    for match in matches:
        if (
            match.encoding == _PREFERRED_LEGACY_ENCODING
            and match.chaos <= best.chaos + _TIE_CHAOS
            and match.coherence >= best.coherence - _TIE_COHERENCE
        ):
            return _PREFERRED_LEGACY_ENCODING
    return str(best.encoding)


def _check_is_text(text: str) -> None:
    if not text.strip():
        raise PreparationError("text_empty", "The text holds only whitespace.")
    if "\x00" in text:
        raise PreparationError("text_binary", "The text contains NUL characters: it is binary.")
    controls = sum(1 for _ in _CONTROL_CHARACTER.finditer(text))
    if controls > _MAX_CONTROL_SHARE * len(text):
        raise PreparationError(
            "text_binary",
            f"{controls:,} of {len(text):,} characters are control characters: the file is "
            "binary, not text.",
        )
