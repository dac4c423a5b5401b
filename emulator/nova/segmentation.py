"""How the Nova stand-in splits inputs for ``SEGMENTED_EMBEDDING``: media by time, text by size.

Both splits cover their input completely, without gaps or overlaps, in order.
"""

from __future__ import annotations

import math
import re

# Probed durations carry float noise (10.000000001 s); a tail shorter than this is not a segment.
_DURATION_TOLERANCE_SECONDS = 1e-6
# Where whitespace meets non-whitespace, either way round: the places a text may be cut.
_WORD_BOUNDARY = re.compile(r"(?<=\S)(?=\s)|(?<=\s)(?=\S)")


def time_segments(duration_seconds: float, segment_seconds: int) -> list[tuple[float, float]]:
    """Consecutive ``(start, end)`` spans in seconds covering exactly ``[0, duration_seconds]``.

    Every span is ``segment_seconds`` long except the last, which ends at the duration:
    ``time_segments(12.5, 5)`` is ``[(0, 5), (5, 10), (10, 12.5)]``. Span ``k`` starts at exactly
    ``k * segment_seconds``. A remainder under a microsecond (float noise in a probed duration)
    joins the last full span instead of making a span of its own. A zero duration gives no spans.
    """
    if segment_seconds <= 0:
        raise ValueError(f"segment length must be positive, got {segment_seconds}")
    if not math.isfinite(duration_seconds) or duration_seconds < 0:
        raise ValueError(f"duration must be a finite number >= 0, got {duration_seconds}")
    if duration_seconds == 0:
        return []
    count = max(1, math.ceil((duration_seconds - _DURATION_TOLERANCE_SECONDS) / segment_seconds))
    return [
        (
            float(index * segment_seconds),
            float(duration_seconds if index == count - 1 else (index + 1) * segment_seconds),
        )
        for index in range(count)
    ]


def text_segments(text: str, max_length_chars: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, end)`` character spans of ``text``, each at most ``max_length_chars``.

    A span that does not reach the end of the text ends at the last word boundary its window
    allows: just after whitespace (the next span starts with a word) or at the end of a word
    that whitespace follows. A span always holds some non-whitespace; only a window with no
    usable boundary (one very long word) is cut inside a word. The spans cover the whole text
    in order with no gaps or overlaps; empty text gives no spans.
    """
    if max_length_chars < 1:
        raise ValueError(f"segment length must be positive, got {max_length_chars}")
    spans: list[tuple[int, int]] = []
    start = 0
    while start < len(text):
        window_end = start + max_length_chars
        if window_end >= len(text):
            end = len(text)
        else:
            end = _last_boundary(text, start, window_end) or window_end
        spans.append((start, end))
        start = end
    return spans


def _last_boundary(text: str, start: int, end: int) -> int | None:
    """The largest cut ``e`` in ``(start, end]`` between whitespace and a word, such that
    ``text[start:e]`` holds some non-whitespace; None if there is none. Needs ``end < len(text)``.
    """
    # The reversed window (with the character after it) finds the last boundary in one regex
    # pass; a backwards loop in Python would be slow for windows of 50,000 characters.
    reversed_window = text[start : end + 1][::-1]
    match = _WORD_BOUNDARY.search(reversed_window)
    if match is None:
        return None
    cut = end + 1 - match.start()
    has_text = cut > start and not text[start:cut].isspace()
    return cut if has_text else None
