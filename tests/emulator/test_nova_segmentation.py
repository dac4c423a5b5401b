"""Splitting long inputs: time spans for audio and video, character spans for text."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from emulator.nova.segmentation import text_segments, time_segments


def test_time_segments_follow_the_segment_length() -> None:
    assert time_segments(12.5, 5) == [(0.0, 5.0), (5.0, 10.0), (10.0, 12.5)]
    assert time_segments(10.0, 5) == [(0.0, 5.0), (5.0, 10.0)]
    assert time_segments(3.2, 5) == [(0.0, 3.2)]
    assert time_segments(0.0, 5) == []


@pytest.mark.parametrize("duration", [0.04, 1.0, 4.999, 5.0, 5.001, 29.97, 90.016, 7200.0])
@pytest.mark.parametrize("segment_seconds", [1, 5, 7, 30])
def test_time_segments_cover_the_duration_exactly(duration: float, segment_seconds: int) -> None:
    spans = time_segments(duration, segment_seconds)

    assert spans[0][0] == 0.0
    assert spans[-1][1] == duration
    for index, (start, end) in enumerate(spans):
        assert start == index * segment_seconds
        assert 0 < end - start <= segment_seconds
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert end == next_start


def test_float_noise_in_a_duration_does_not_make_a_tiny_last_segment() -> None:
    assert time_segments(10.0000000001, 5) == [(0.0, 5.0), (5.0, 10.0000000001)]


@pytest.mark.parametrize(("duration", "segment_seconds"), [(-1.0, 5), (float("nan"), 5), (10, 0)])
def test_time_segments_reject_impossible_arguments(duration: float, segment_seconds: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        time_segments(duration, segment_seconds)


def prose(seed: int, words: int) -> str:
    """Words of 1–14 letters separated by spaces, newlines and the odd double space."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 15, size=words)
    separators = rng.choice([" ", " ", " ", "\n", "  ", ", "], size=words)
    return "".join(
        "x" * length + separator for length, separator in zip(lengths, separators, strict=True)
    )


def assert_covers(text: str, spans: list[tuple[int, int]], max_length: int) -> None:
    assert "".join(text[start:end] for start, end in spans) == text
    assert spans[0][0] == 0
    assert spans[-1][1] == len(text)
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert end == next_start
    assert all(0 < end - start <= max_length for start, end in spans)


@pytest.mark.parametrize("max_length", [800, 1000, 32_000])
def test_text_segments_cover_the_text_and_respect_the_limit(max_length: int) -> None:
    text = prose(1, 12_000)

    spans = text_segments(text, max_length)

    assert_covers(text, spans, max_length)


@pytest.mark.parametrize("max_length", [800, 999, 5_000])
def test_text_is_cut_between_words(max_length: int) -> None:
    text = prose(2, 6_000)

    spans = text_segments(text, max_length)

    for _, end in spans[:-1]:
        assert text[end - 1].isspace() or text[end].isspace(), f"word split at {end}"


def test_segments_use_nearly_all_of_the_limit() -> None:
    text = prose(3, 6_000)

    spans = text_segments(text, 800)

    # Words are at most 16 characters with their separator, so no cut wastes more than that.
    assert all(end - start > 800 - 16 for start, end in spans[:-1])


def test_a_cut_prefers_the_start_of_the_next_word() -> None:
    assert text_segments("hello world again", 8) == [(0, 6), (6, 12), (12, 17)]


def test_a_word_that_fills_the_window_exactly_is_kept_whole() -> None:
    assert text_segments("abcd efgh", 4)[0] == (0, 4)
    assert text_segments("abcd efgh", 5) == [(0, 5), (5, 9)]


def test_a_word_longer_than_the_limit_is_cut_inside() -> None:
    text = "a" * 2000 + " tail"

    spans = text_segments(text, 800)

    assert spans[:2] == [(0, 800), (800, 1600)]
    assert_covers(text, spans, 800)


def test_text_that_fits_is_one_segment() -> None:
    assert text_segments("short text", 800) == [(0, 10)]


def test_empty_text_has_no_segments() -> None:
    assert text_segments("", 800) == []


def test_text_segment_length_must_be_positive() -> None:
    with pytest.raises(ValueError, match="must be positive"):
        text_segments("text", 0)
