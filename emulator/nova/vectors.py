"""The Nova stand-in's vectors: deterministic, cheap, and similar where their inputs are similar.

These are not Nova's embeddings and say nothing about Nova's retrieval quality. What they keep:

- the same input gives a bit-identical vector, in any process (seeds come from BLAKE2 digests,
  never from Python's salted ``hash()``);
- every vector is float32 with unit L2 norm; a vector of 256, 384 or 1024 values is the first
  values of the 3072-d vector, renormalised, as Nova's Matryoshka training gives;
- texts sharing words, images sharing pixels, sounds with similar spectra and clips with similar
  pictures land near each other. Each kind of input is projected with its own fixed seeded
  Gaussian matrix, so vectors of different modalities are close to orthogonal.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import struct
from collections import Counter

import numpy as np
from PIL import Image

FULL_DIMENSION = 3072
DIMENSIONS = (256, 384, 1024, 3072)
MAX_TOKENS = 8192
TRUNCATION_MODES = ("START", "END", "NONE")
DETAIL_LEVELS = ("STANDARD_IMAGE", "DOCUMENT_IMAGE")

# The stand-in's tokeniser: a token is a run of word characters or one punctuation mark.
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
# Cells per side of the grid an image is averaged down to; documents keep finer detail.
_IMAGE_GRID = {"STANDARD_IMAGE": 16, "DOCUMENT_IMAGE": 32}
_VIDEO_GRID = 16
_MOTION_GRID = 8
# Weight of an image's mean colour against its pattern: without it all solid images coincide;
# at full weight the shared background of, say, scanned pages would swamp their differences.
_MEAN_COLOUR_WEIGHT = 0.5
_MOTION_WEIGHT = 0.5
_AUDIO_BANDS = np.geomspace(60.0, 4000.0, 65)
_AUDIO_FRAME_SECONDS = 0.064
# Power below this (about -100 dB of full scale) counts as silence; it keeps log() finite.
_POWER_FLOOR = 1e-10
# Band levels more than this far below the loudest band are clipped: otherwise the slow
# spectral-leakage slopes around any tone make every two tones look alike.
_DYNAMIC_RANGE_DB = 60.0
_LOUDNESS_WEIGHT = 0.5
# A word's direction is a signed sum of a few rows of one fixed Gaussian table: as random as a
# direction drawn per word, but a text costs one matrix-vector product however many words it has.
_WORD_TABLE_ROWS = 2048
_ROWS_PER_WORD = 8
_WORD_CACHE_SIZE = 16384


def matryoshka(full: np.ndarray, dimension: int) -> np.ndarray:
    """The first ``dimension`` values of a 3072-d vector, renormalised to unit L2 norm (float32)."""
    if dimension not in DIMENSIONS:
        raise ValueError(f"embedding dimension must be one of {DIMENSIONS}, got {dimension}")
    vector = np.asarray(full, dtype=np.float64)
    if vector.shape != (FULL_DIMENSION,):
        raise ValueError(f"expected a {FULL_DIMENSION}-d vector, got shape {vector.shape}")
    return _unit(vector[:dimension], "matryoshka").astype(np.float32)


def count_tokens(text: str) -> int:
    """The number of tokens the stand-in counts in ``text``.

    A token is a maximal run of word characters (letters, digits, underscore; regex ``\\w+``)
    or a single character that is neither a word character nor whitespace (``[^\\w\\s]``):
    ``"Hello, world!"`` is four tokens. Nova's own tokeniser splits long words further, so real
    counts run somewhat higher.
    """
    return sum(1 for _ in _TOKEN.finditer(text))


def truncated_text(text: str, mode: str, max_tokens: int = MAX_TOKENS) -> tuple[str, int | None]:
    """``text`` cut to at most ``max_tokens`` tokens (see :func:`count_tokens`) as ``mode`` says.

    Returns ``(kept, truncated_char_length)``. When the text fits, ``kept`` is ``text`` and the
    length is None. Otherwise the length is the character index in ``text`` where it was cut:
    mode ``END`` keeps ``text[:index]`` (up to the end of the last token kept), mode ``START``
    keeps ``text[index:]`` (from the start of the first token kept). Mode ``NONE`` raises
    ``ValueError`` for text over the limit.
    """
    if mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation mode must be one of {TRUNCATION_MODES}, got {mode!r}")
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    spans = [match.span() for match in _TOKEN.finditer(text)]
    if len(spans) <= max_tokens:
        return text, None
    if mode == "NONE":
        raise ValueError(
            f"The input text exceeds {max_tokens} tokens ({len(spans)} tokens) and truncationMode "
            "is NONE."
        )
    if mode == "END":
        index = spans[max_tokens - 1][1]
        return text[:index], index
    index = spans[len(spans) - max_tokens][0]
    return text[index:], index


def text_embedding(text: str, dimension: int) -> np.ndarray:
    """The stand-in vector of ``text``: texts that share words are near each other.

    Each distinct lower-cased word gets its own fixed random direction, weighted by
    ``1 + log(count)``; the vector is their sum. Word order and punctuation do not matter. Text
    without words gets one fixed vector. Truncation is the caller's job (:func:`truncated_text`).
    """
    counts = Counter(w.casefold() for w in _WORD.findall(text))
    if not counts:
        return matryoshka(_fallback("text/empty"), dimension)
    rows: list[int] = []
    signed_weights: list[float] = []
    for word, count in counts.items():
        word_rows, signs = _word_rows(word)
        weight = 1.0 + math.log(count)
        rows.extend(word_rows)
        signed_weights.extend(weight * sign for sign in signs)
    row_weights = np.bincount(rows, signed_weights, minlength=_WORD_TABLE_ROWS)
    used = np.flatnonzero(row_weights)
    if len(used) < _WORD_TABLE_ROWS // 8:
        # Few words: gathering their rows beats multiplying the whole table by zeros.
        full = row_weights[used].astype(np.float32) @ _word_table()[used]
    else:
        full = row_weights.astype(np.float32) @ _word_table()
    return matryoshka(_unit(full.astype(np.float64), "text/empty"), dimension)


def image_embedding(pixels: np.ndarray, dimension: int, detail_level: str) -> np.ndarray:
    """The stand-in vector of an ``(H, W, 3)`` uint8 RGB image: similar pixels, nearby vectors.

    The image is averaged down to a grid (16×16 for ``STANDARD_IMAGE``, 32×32 for
    ``DOCUMENT_IMAGE``), its mean colour is set apart from its pattern, and both are projected.
    The two detail levels give unrelated vectors for the same image.
    """
    grid = _IMAGE_GRID.get(detail_level)
    if grid is None:
        raise ValueError(f"detail level must be one of {DETAIL_LEVELS}, got {detail_level!r}")
    features = _picture_features(_grid_pixels(_checked_pixels(pixels), grid))
    full = _projected(f"image/{detail_level}", features)
    return matryoshka(_unit(full, f"image/{detail_level}"), dimension)


def audio_embedding(
    samples: np.ndarray, sample_rate: int, start: float, end: float, dimension: int
) -> np.ndarray:
    """The stand-in vector of the sound from ``start`` to ``end`` seconds of mono ``samples``.

    It reflects the segment's average spectrum (energy in 64 log-spaced bands from 60 Hz to
    4 kHz, in decibels over a 60 dB range) and, more weakly, its loudness: the same tone at any
    volume lands close, different pitches far apart. Silence, or a segment past the end, gives
    one fixed vector.
    """
    return matryoshka(_audio_full(samples, sample_rate, start, end), dimension)


def video_embedding(
    timestamps: np.ndarray, frames: np.ndarray, start: float, end: float, dimension: int
) -> np.ndarray:
    """The stand-in vector of the picture from ``start`` to ``end`` seconds of a clip.

    ``timestamps`` (seconds, ``(N,)``) and ``frames`` (``(N, h, w, 3)`` uint8) are as
    :func:`emulator.nova.media.decoded_video_frames` returns them. The vector reflects the mean
    of the frames shown in ``[start, end)`` and, more weakly, where they change. A segment with
    no sampled frame uses the frame nearest its middle; a clip without frames gives one fixed
    vector.
    """
    return matryoshka(_video_full(timestamps, frames, start, end), dimension)


def audio_video_embedding(
    timestamps: np.ndarray,
    frames: np.ndarray,
    samples: np.ndarray | None,
    sample_rate: int,
    start: float,
    end: float,
    dimension: int,
) -> np.ndarray:
    """One vector for picture and sound of ``[start, end)`` seconds (``AUDIO_VIDEO_COMBINED``).

    The normalised sum of the full video vector (:func:`video_embedding`) and the full audio
    vector (:func:`audio_embedding`), so it sits near both; a clip that agrees with another in
    picture and sound is nearer than one that agrees in either alone. When ``samples`` is None
    or empty (the file has no audio stream) it is the video vector alone.
    """
    full = _video_full(timestamps, frames, start, end)
    if samples is not None and samples.size:
        full = _unit(full + _audio_full(samples, sample_rate, start, end), "audio-video")
    return matryoshka(full, dimension)


def _audio_full(samples: np.ndarray, sample_rate: int, start: float, end: float) -> np.ndarray:
    _check_span(start, end)
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    # Slice before converting: samples may hold a whole long recording.
    window = np.asarray(samples).reshape(-1)[round(start * sample_rate) : round(end * sample_rate)]
    segment = window.astype(np.float64)
    features = _spectrum_features(segment, sample_rate)
    return _unit(_projected("audio", features), "audio")


def _video_full(timestamps: np.ndarray, frames: np.ndarray, start: float, end: float) -> np.ndarray:
    _check_span(start, end)
    times = np.asarray(timestamps, dtype=np.float64).reshape(-1)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) != len(times):
        raise ValueError("expected frames of shape (N, h, w, 3) and N timestamps")
    if not len(times):
        return _fallback("video/empty")
    chosen = frames[(times >= start) & (times < end)]
    if not len(chosen):
        chosen = frames[[int(np.argmin(np.abs(times - (start + end) / 2)))]]
    moving = chosen.astype(np.float32)
    mean_frame = np.round(moving.mean(axis=0)).astype(np.uint8)
    picture = _picture_features(_grid_pixels(mean_frame, _VIDEO_GRID))
    if len(moving) > 1:
        change = np.abs(np.diff(moving, axis=0)).mean(axis=(0, 3))
    else:
        change = np.zeros(moving.shape[1:3], dtype=np.float32)
    change_grid = _grid_pixels(np.round(change).astype(np.uint8), _MOTION_GRID) / 255.0
    motion = _MOTION_WEIGHT * change_grid.ravel() / _MOTION_GRID
    features = np.concatenate([picture, motion])
    return _unit(_projected("video", features), "video")


def _picture_features(grid_pixels: np.ndarray) -> np.ndarray:
    """An averaged-down RGB image as pattern (mean colour removed) plus down-weighted colour."""
    scaled = grid_pixels.astype(np.float64) / 127.5 - 1.0
    mean_colour = scaled.mean(axis=(0, 1))
    pattern = (scaled - mean_colour).ravel() / scaled.shape[0]
    return np.concatenate([pattern, _MEAN_COLOUR_WEIGHT * mean_colour])


def _spectrum_features(segment: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log band energies of the segment's mean power spectrum, centred, plus its loudness."""
    frame = 1 << max(4, math.ceil(math.log2(_AUDIO_FRAME_SECONDS * sample_rate)))
    if len(segment) < frame:
        segment = np.pad(segment, (0, frame - len(segment)))
    windows = np.lib.stride_tricks.sliding_window_view(segment, frame)[:: frame // 2]
    taper = np.hanning(frame)
    power = (np.abs(np.fft.rfft(windows * taper, axis=1)) ** 2).mean(axis=0) / np.sum(taper**2)
    frequencies = np.fft.rfftfreq(frame, 1.0 / sample_rate)
    # Mean power density per band from the cumulative spectrum, so bands narrower than one FFT
    # bin still get a value and band width does not bias the energies.
    cumulative = np.concatenate([[0.0], np.cumsum(power)])
    bin_edges = np.concatenate([frequencies, [frequencies[-1] + frequencies[1]]])
    bin_edges -= frequencies[1] / 2
    at_edges = np.interp(_AUDIO_BANDS, bin_edges, cumulative)
    density = np.diff(at_edges) / np.diff(_AUDIO_BANDS) * frequencies[1]
    density = np.maximum(density, 0.0)
    floor = max(_POWER_FLOOR, float(density.max()) * 10 ** (-_DYNAMIC_RANGE_DB / 10))
    levels = np.log10(density + floor)
    shape = (levels - levels.mean()) / math.sqrt(len(levels))
    loudness = np.log10(density + _POWER_FLOOR).mean()
    return np.concatenate([shape, [_LOUDNESS_WEIGHT * (loudness / 5.0 + 1.0)]])


def _grid_pixels(pixels: np.ndarray, grid: int) -> np.ndarray:
    """``pixels`` (uint8, ``(H, W)`` or ``(H, W, 3)``) area-averaged to ``grid`` × ``grid``."""
    resized = Image.fromarray(np.ascontiguousarray(pixels)).resize(
        (grid, grid), Image.Resampling.BOX
    )
    return np.asarray(resized, dtype=np.float64)


def _checked_pixels(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected (H, W, 3) uint8 pixels, got {pixels.shape} {pixels.dtype}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError("the image has no pixels")
    return pixels


def _check_span(start: float, end: float) -> None:
    if not (0.0 <= start <= end) or not math.isfinite(end):
        raise ValueError(f"need 0 <= start <= end, got start={start} end={end}")


def _seed(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


@functools.lru_cache(maxsize=_WORD_CACHE_SIZE)
def _word_rows(word: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """The word table rows (and their ±1 signs) whose sum is ``word``'s direction."""
    digest = hashlib.blake2b(word.encode("utf-8"), digest_size=32, person=b"novaflow-word").digest()
    values = struct.unpack("<16H", digest)
    rows = tuple(value % _WORD_TABLE_ROWS for value in values[:_ROWS_PER_WORD])
    signs = tuple(1.0 if value & 1 else -1.0 for value in values[_ROWS_PER_WORD:])
    return rows, signs


@functools.cache
def _word_table() -> np.ndarray:
    """The fixed ``(2048, 3072)`` Gaussian rows that word directions are made of."""
    rng = np.random.default_rng(_seed("word-table"))
    table = rng.standard_normal((_WORD_TABLE_ROWS, FULL_DIMENSION), dtype=np.float32)
    table.flags.writeable = False
    return table


def _projected(name: str, features: np.ndarray) -> np.ndarray:
    """``features`` mapped to 3072 values by the fixed random projection for ``name``."""
    # float32 on both sides: a float64 operand would make numpy copy the whole matrix per call.
    product = _projection(name, features.size) @ features.astype(np.float32)
    return product.astype(np.float64)


@functools.cache
def _projection(name: str, inputs: int) -> np.ndarray:
    """A fixed ``(3072, inputs)`` Gaussian matrix per input kind, made once per process."""
    rng = np.random.default_rng(_seed("projection", name, str(inputs)))
    matrix = rng.standard_normal((FULL_DIMENSION, inputs), dtype=np.float32)
    matrix.flags.writeable = False
    return matrix


@functools.cache
def _fallback(name: str) -> np.ndarray:
    """A fixed unit vector standing in where the input gives no direction of its own."""
    rng = np.random.default_rng(_seed("fallback", name))
    vector = rng.standard_normal(FULL_DIMENSION)
    vector /= np.linalg.norm(vector)
    vector.flags.writeable = False
    return vector


def _unit(vector: np.ndarray, fallback: str) -> np.ndarray:
    """``vector`` scaled to unit length; ``fallback``'s fixed vector (cut to size) if it is 0."""
    norm = float(np.linalg.norm(vector))
    if not math.isfinite(norm) or norm < 1e-12:
        substitute = _fallback(fallback)[: len(vector)]
        return substitute / np.linalg.norm(substitute)
    return vector / norm
