"""The stand-in's vectors: well-formed, reproducible, Matryoshka-shaped, similar where it counts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import numpy as np
import pytest

from emulator.nova import vectors
from emulator.nova.media import decode_image, decoded_audio, decoded_video_frames
from emulator.nova.vectors import (
    DIMENSIONS,
    MAX_TOKENS,
    audio_embedding,
    audio_video_embedding,
    count_tokens,
    image_embedding,
    matryoshka,
    text_embedding,
    truncated_text,
    video_embedding,
)
from tasks.demo import sample_media

RATE = 8000
Clip = tuple[np.ndarray, np.ndarray, np.ndarray]  # timestamps, frames, samples


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a.astype(np.float64), b.astype(np.float64)))


@pytest.fixture(scope="module")
def tones() -> dict[tuple[int, str], np.ndarray]:
    """Decoded 6 s tones of seeds 1–3, each as wav, mp3 and ogg."""
    return {
        (seed, fmt): decoded_audio(sample_media.sample_audio(seed, 6.0, fmt))
        for seed in (1, 2, 3)
        for fmt in ("wav", "mp3", "ogg")
    }


@pytest.fixture(scope="module")
def clips() -> dict[int, Clip]:
    """Decoded 10 s mp4 clips of seeds 1 and 2."""
    decoded = {}
    for seed in (1, 2):
        data = sample_media.sample_video(seed, 10.0, "mp4")
        decoded[seed] = (*decoded_video_frames(data), decoded_audio(data))
    return decoded


@pytest.fixture(scope="module")
def all_kinds(clips: dict[int, Clip]) -> dict[str, Callable[[int], np.ndarray]]:
    """One embedding of each kind, as a function of the dimension."""
    timestamps, frames, samples = clips[1]
    pixels = sample_media.sample_pixels(1)
    return {
        "text": lambda d: text_embedding("A red fox, by the river.", d),
        "standard-image": lambda d: image_embedding(pixels, d, "STANDARD_IMAGE"),
        "document-image": lambda d: image_embedding(pixels, d, "DOCUMENT_IMAGE"),
        "audio": lambda d: audio_embedding(samples, RATE, 0.0, 5.0, d),
        "video": lambda d: video_embedding(timestamps, frames, 0.0, 5.0, d),
        "audio-video": lambda d: audio_video_embedding(
            timestamps, frames, samples, RATE, 0.0, 5.0, d
        ),
    }


KINDS = ["text", "standard-image", "document-image", "audio", "video", "audio-video"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_every_vector_is_unit_float32_of_the_requested_length(
    all_kinds: dict[str, Callable[[int], np.ndarray]], kind: str, dimension: int
) -> None:
    vector = all_kinds[kind](dimension)

    assert vector.shape == (dimension,)
    assert vector.dtype == np.float32
    assert np.isfinite(vector).all()
    assert np.linalg.norm(vector.astype(np.float64)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_same_input_gives_a_bit_identical_vector(
    all_kinds: dict[str, Callable[[int], np.ndarray]], kind: str
) -> None:
    assert all_kinds[kind](1024).tobytes() == all_kinds[kind](1024).tobytes()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dimension", [256, 384, 1024])
def test_lower_dimensions_are_renormalised_prefixes_of_the_full_vector(
    all_kinds: dict[str, Callable[[int], np.ndarray]], kind: str, dimension: int
) -> None:
    full = all_kinds[kind](3072).astype(np.float64)
    prefix = full[:dimension] / np.linalg.norm(full[:dimension])

    np.testing.assert_allclose(all_kinds[kind](dimension), prefix, atol=1e-6)


def test_vectors_are_the_same_in_another_process() -> None:
    script = (
        "import sys, numpy as np\n"
        "from emulator.nova import vectors as v\n"
        "from tasks.demo import sample_media as s\n"
        "px = s.sample_pixels(1)\n"
        "tone = s.tone_samples(1, 2.0, 8000)\n"
        "parts = [v.text_embedding('Hello, world of foxes', 256),\n"
        "         v.image_embedding(px, 256, 'STANDARD_IMAGE'),\n"
        "         v.audio_embedding(tone, 8000, 0.0, 2.0, 256)]\n"
        "sys.stdout.write(np.concatenate(parts).tobytes().hex())\n"
    )
    # A different hash seed would change anything that leaned on Python's salted hash().
    env = {"PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env
    )
    here = np.concatenate(
        [
            text_embedding("Hello, world of foxes", 256),
            image_embedding(sample_media.sample_pixels(1), 256, "STANDARD_IMAGE"),
            audio_embedding(sample_media.tone_samples(1, 2.0, 8000), 8000, 0.0, 2.0, 256),
        ]
    )

    assert result.stdout == here.tobytes().hex()


def test_matryoshka_rejects_unknown_dimensions_and_shapes() -> None:
    with pytest.raises(ValueError, match="one of"):
        matryoshka(np.ones(3072), 512)
    with pytest.raises(ValueError, match="3072-d"):
        matryoshka(np.ones(1024), 256)


def test_matryoshka_of_a_zero_prefix_is_still_a_unit_vector() -> None:
    vector = matryoshka(np.concatenate([np.zeros(256), np.ones(2816)]), 256)

    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_texts_sharing_words_are_closer_than_unrelated_texts() -> None:
    fox = text_embedding("The quick brown fox jumps over the lazy dog", 1024)
    other_fox = text_embedding("A quick brown fox leaps over a sleepy cat", 1024)
    finance = text_embedding("Quarterly revenue grew by ten percent in Europe", 1024)

    assert similarity(fox, other_fox) > similarity(fox, finance) + 0.2
    assert abs(similarity(fox, finance)) < 0.15


def test_text_vectors_ignore_case_word_order_and_punctuation() -> None:
    assert np.array_equal(
        text_embedding("Brown fox, quick!", 256), text_embedding("quick BROWN fox", 256)
    )


@pytest.mark.parametrize("text", ["", "   ", "?!…"])
def test_text_without_words_still_gets_a_unit_vector(text: str) -> None:
    vector = text_embedding(text, 256)

    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_tokens_are_words_and_punctuation_marks() -> None:
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("") == 0
    assert count_tokens("naïve café_2 x") == 3


def test_text_within_the_limit_is_not_truncated() -> None:
    text = "word " * MAX_TOKENS

    for mode in ("START", "END", "NONE"):
        assert truncated_text(text, mode) == (text, None)


def test_end_truncation_keeps_the_beginning() -> None:
    text = " ".join(f"w{i}" for i in range(MAX_TOKENS + 100))

    kept, cut = truncated_text(text, "END")

    assert cut is not None
    assert kept == text[:cut]
    assert count_tokens(kept) == MAX_TOKENS
    assert kept.endswith(f"w{MAX_TOKENS - 1}")


def test_start_truncation_keeps_the_end() -> None:
    text = " ".join(f"w{i}" for i in range(MAX_TOKENS + 100))

    kept, cut = truncated_text(text, "START")

    assert cut is not None
    assert kept == text[cut:]
    assert count_tokens(kept) == MAX_TOKENS
    assert kept.startswith("w100 ")


def test_truncation_counts_punctuation() -> None:
    assert truncated_text("a, b, c", "END", max_tokens=3) == ("a, b", 4)
    assert truncated_text("a, b, c", "START", max_tokens=3) == ("b, c", 3)


def test_mode_none_refuses_text_over_the_limit() -> None:
    with pytest.raises(ValueError, match="exceeds 8192 tokens"):
        truncated_text("word " * (MAX_TOKENS + 1), "NONE")


def test_unknown_truncation_mode_is_rejected() -> None:
    with pytest.raises(ValueError, match="truncation mode"):
        truncated_text("text", "MIDDLE")


def noisy(pixels: np.ndarray, amount: int) -> np.ndarray:
    noise = np.random.default_rng(0).integers(-amount, amount + 1, pixels.shape)
    return np.clip(pixels.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("detail_level", ["STANDARD_IMAGE", "DOCUMENT_IMAGE"])
def test_similar_images_are_closer_than_different_ones(detail_level: str) -> None:
    pixels = sample_media.sample_pixels(1, 128, 96)
    original = image_embedding(pixels, 1024, detail_level)
    as_jpeg = decode_image(sample_media.encoded_image(pixels, "jpeg"))

    near = [
        image_embedding(noisy(pixels, 20), 1024, detail_level),
        image_embedding(as_jpeg, 1024, detail_level),
    ]
    far = [
        image_embedding(sample_media.sample_pixels(seed, 128, 96), 1024, detail_level)
        for seed in range(2, 8)
    ]

    assert min(similarity(original, v) for v in near) > 0.95
    assert max(similarity(original, v) for v in far) < 0.7


def test_image_size_does_not_matter_much() -> None:
    large = sample_media.sample_pixels(1, 128, 96)
    small = np.asarray(large[::2, ::2])

    assert (
        similarity(
            image_embedding(large, 1024, "STANDARD_IMAGE"),
            image_embedding(small, 1024, "STANDARD_IMAGE"),
        )
        > 0.9
    )


def test_solid_colours_are_told_apart_by_colour() -> None:
    def solid(colour: tuple[int, int, int]) -> np.ndarray:
        return image_embedding(np.full((10, 10, 3), colour, np.uint8), 256, "STANDARD_IMAGE")

    red = solid((250, 0, 0))

    assert similarity(red, solid((240, 10, 0))) > similarity(red, solid((0, 0, 250))) + 0.5


def test_detail_levels_give_different_vectors() -> None:
    pixels = sample_media.sample_pixels(1)

    standard = image_embedding(pixels, 256, "STANDARD_IMAGE")
    document = image_embedding(pixels, 256, "DOCUMENT_IMAGE")

    assert abs(similarity(standard, document)) < 0.3
    with pytest.raises(ValueError, match="detail level"):
        image_embedding(pixels, 256, "HIGH")


def test_malformed_pixels_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        image_embedding(np.zeros((4, 4), np.uint8), 256, "STANDARD_IMAGE")


def test_the_same_tone_is_close_in_any_format_and_volume(
    tones: dict[tuple[int, str], np.ndarray],
) -> None:
    reference = audio_embedding(tones[1, "wav"], RATE, 0.0, 5.0, 1024)

    for fmt in ("wav", "mp3", "ogg"):
        for start in (0.0, 1.0):
            other = audio_embedding(tones[1, fmt], RATE, start, start + 5.0, 1024)
            assert similarity(reference, other) > 0.95, (fmt, start)
    quiet = audio_embedding(tones[1, "wav"] * 0.05, RATE, 0.0, 5.0, 1024)
    assert similarity(reference, quiet) > 0.9


def test_different_tones_are_far_apart(tones: dict[tuple[int, str], np.ndarray]) -> None:
    reference = audio_embedding(tones[1, "wav"], RATE, 0.0, 5.0, 1024)

    for seed in (2, 3):
        for fmt in ("wav", "mp3", "ogg"):
            other = audio_embedding(tones[seed, fmt], RATE, 0.0, 5.0, 1024)
            assert similarity(reference, other) < 0.3, (seed, fmt)


@pytest.mark.parametrize(
    ("samples", "start", "end"),
    [
        (np.zeros(RATE * 2, np.float32), 0.0, 2.0),
        (np.zeros(0, np.float32), 0.0, 5.0),
        (np.ones(RATE, np.float32) * 0.5, 3.0, 4.0),
        (np.ones(RATE, np.float32) * 0.5, 0.5, 0.5),
    ],
    ids=["silence", "no-samples", "past-the-end", "empty-span"],
)
def test_silent_or_empty_segments_give_a_valid_vector(
    samples: np.ndarray, start: float, end: float
) -> None:
    vector = audio_embedding(samples, RATE, start, end, 256)

    assert np.isfinite(vector).all()
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_segments_must_run_forwards() -> None:
    with pytest.raises(ValueError, match="start <= end"):
        audio_embedding(np.zeros(10, np.float32), RATE, 2.0, 1.0, 256)


def test_the_same_clip_segment_is_identical_and_other_clips_are_further(
    clips: dict[int, Clip],
) -> None:
    timestamps, frames, _ = clips[1]
    first = video_embedding(timestamps, frames, 0.0, 5.0, 1024)

    same = video_embedding(timestamps, frames, 0.0, 5.0, 1024)
    later = video_embedding(timestamps, frames, 5.0, 10.0, 1024)
    other = video_embedding(*clips[2][:2], 0.0, 5.0, 1024)

    assert np.array_equal(first, same)
    assert similarity(first, later) > similarity(first, other)


def test_a_short_segment_between_sampled_frames_uses_the_nearest_frame(
    clips: dict[int, Clip],
) -> None:
    timestamps, frames, _ = clips[1]
    nearest = int(np.argmin(np.abs(timestamps - 3.1)))

    between = video_embedding(timestamps, frames, 3.05, 3.15, 256)
    single = video_embedding(timestamps[[nearest]], frames[[nearest]], 0.0, 10.0, 256)

    assert np.array_equal(between, single)


def test_a_clip_without_frames_gets_a_valid_vector() -> None:
    vector = video_embedding(np.zeros(0), np.zeros((0, 32, 32, 3), np.uint8), 0.0, 5.0, 256)

    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-6)


def test_combined_vectors_sit_between_picture_and_sound(clips: dict[int, Clip]) -> None:
    timestamps, frames, samples = clips[1]
    combined = audio_video_embedding(timestamps, frames, samples, RATE, 0.0, 5.0, 1024)
    picture = video_embedding(timestamps, frames, 0.0, 5.0, 1024)
    sound = audio_embedding(samples, RATE, 0.0, 5.0, 1024)

    assert 0.5 < similarity(combined, picture) < 0.95
    assert 0.5 < similarity(combined, sound) < 0.95


def test_combined_vectors_agreeing_in_picture_and_sound_are_nearest(
    clips: dict[int, Clip],
) -> None:
    (times_1, frames_1, sound_1), (times_2, frames_2, sound_2) = clips[1], clips[2]
    reference = audio_video_embedding(times_1, frames_1, sound_1, RATE, 0.0, 5.0, 1024)

    same_picture = audio_video_embedding(times_1, frames_1, sound_2, RATE, 0.0, 5.0, 1024)
    same_sound = audio_video_embedding(times_2, frames_2, sound_1, RATE, 0.0, 5.0, 1024)
    neither = audio_video_embedding(times_2, frames_2, sound_2, RATE, 0.0, 5.0, 1024)

    assert similarity(reference, same_picture) > similarity(reference, neither)
    assert similarity(reference, same_sound) > similarity(reference, neither)


def test_combined_vector_of_a_clip_without_sound_is_its_picture(clips: dict[int, Clip]) -> None:
    timestamps, frames, _ = clips[1]
    picture = video_embedding(timestamps, frames, 0.0, 5.0, 256)

    for no_sound in (None, np.zeros(0, np.float32)):
        combined = audio_video_embedding(timestamps, frames, no_sound, RATE, 0.0, 5.0, 256)
        assert np.array_equal(combined, picture)


def test_modalities_use_unrelated_projections(
    all_kinds: dict[str, Callable[[int], np.ndarray]],
) -> None:
    for first, second in [("text", "standard-image"), ("standard-image", "video")]:
        assert abs(similarity(all_kinds[first](3072), all_kinds[second](3072))) < 0.2


def test_projections_are_built_once_per_process() -> None:
    pixels = sample_media.sample_pixels(1)
    image_embedding(pixels, 256, "STANDARD_IMAGE")
    built = vectors._projection.cache_info().misses

    image_embedding(sample_media.sample_pixels(2), 256, "STANDARD_IMAGE")

    assert vectors._projection.cache_info().misses == built
