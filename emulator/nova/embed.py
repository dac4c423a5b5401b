"""Vectors for checked requests: InvokeModel's ``embeddings`` array and an async job's segments.

Vectors come from the content (decoded pixels, samples and frames, see
:mod:`emulator.nova.vectors`), so the same input always gives the same vector. The
``embeddingPurpose`` does not change a vector: the stand-in has one embedding space.

Choices where the reference is silent or unsure (§4):

* ``AUDIO_VIDEO_COMBINED`` segments go to ``embedding-audio-video.jsonl`` as the AWS launch blog
  reads them (the schema page lists no file for them); images go to ``embedding-image.jsonl``
  (the page's ``embedding-image.json`` is taken for a typo) (§4.1).
* ``segmentEndCharPosition`` is exclusive, like a Python slice end, as the page's field
  description says; ``segmentEndSeconds`` is the segment's end instant (§4.3).
* Every text segment carries ``truncatedCharLength``: 0 when the segment was not cut, as a real
  output line was seen to (§4.3); otherwise the index within the segment where it was cut.
* A text segment over the token limit with ``truncationMode`` NONE fails on its own
  (``INVALID_CONTENT``) instead of failing the job: the model meets it segment by segment.
* ``AUDIO_VIDEO_SEPARATE`` for a video without sound gives the audio vector of silence.
* An image's single line has ``segmentMetadata`` ``{"segmentIndex": 0}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emulator.errors import bedrock_validation
from emulator.nova import segmentation, vectors
from emulator.nova.content import (
    ASYNC_LIMITS,
    AUDIO_SAMPLE_RATE,
    MAX_MEDIA_SEGMENTS,
    MAX_TEXT_SEGMENTS,
    SYNC_LIMITS,
    LoadedMedia,
    decoded_frames,
    decoded_samples,
    describe,
    load_audio_or_video,
    load_image,
    load_text,
)
from emulator.nova.schema import (
    AUDIO_VIDEO_COMBINED,
    AudioInput,
    EmbeddingRequest,
    ImageInput,
    TextInput,
    VideoInput,
)
from emulator.objects import ObjectStore

TEXT, IMAGE, AUDIO, VIDEO = "TEXT", "IMAGE", "AUDIO", "VIDEO"
OUTPUT_FILE_NAMES = {
    TEXT: "embedding-text.jsonl",
    IMAGE: "embedding-image.jsonl",
    AUDIO: "embedding-audio.jsonl",
    VIDEO: "embedding-video.jsonl",
    AUDIO_VIDEO_COMBINED: "embedding-audio-video.jsonl",
}
INVALID_CONTENT = "INVALID_CONTENT"


@dataclass(frozen=True)
class SegmentPlan:
    """What a checked SEGMENTED_EMBEDDING request will embed.

    ``media_seconds`` is the audio or video length (0 for text and images); ``segment_count``
    is the number of segments per output file.
    """

    media_seconds: float
    segment_count: int


@dataclass(frozen=True)
class Segment:
    """One line of an output JSONL file: a vector, or the reason there is none.

    ``metadata`` is the line's ``segmentMetadata``; ``embedding`` is None exactly when the
    segment failed, and then ``failure_reason`` and ``message`` say why.
    """

    metadata: Mapping[str, Any]
    embedding: np.ndarray | None
    failure_reason: str | None = None
    message: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSONL line: ``embedding`` (success only), ``segmentMetadata``, ``status``…"""
        if self.embedding is None:
            return {
                "segmentMetadata": dict(self.metadata),
                "status": "FAILURE",
                "failureReason": self.failure_reason,
                "message": self.message,
            }
        return {
            "embedding": self.embedding.tolist(),
            "segmentMetadata": dict(self.metadata),
            "status": "SUCCESS",
        }


@dataclass(frozen=True)
class EmbeddingSeries:
    """The segments of one embedding type, in order: one output JSONL file's content."""

    embedding_type: str
    segments: tuple[Segment, ...]

    @property
    def file_name(self) -> str:
        """The output file these segments are written to."""
        return OUTPUT_FILE_NAMES[self.embedding_type]


def single_embeddings(objects: ObjectStore, request: EmbeddingRequest) -> list[dict[str, Any]]:
    """InvokeModel's ``embeddings`` array for a checked SINGLE_EMBEDDING request.

    One entry, or two (VIDEO then AUDIO) for ``AUDIO_VIDEO_SEPARATE``; ``truncatedCharLength``
    appears only when the text was cut to the token limit.
    """
    content, dimension = request.content, request.embedding_dimension
    if isinstance(content, TextInput):
        text = load_text(objects, content, SYNC_LIMITS)
        try:
            kept, cut_at = vectors.truncated_text(text, content.truncation_mode)
        except ValueError as err:
            raise bedrock_validation(str(err)) from None
        entry = _entry(TEXT, vectors.text_embedding(kept, dimension))
        if cut_at is not None:
            entry["truncatedCharLength"] = cut_at
        return [entry]
    if isinstance(content, ImageInput):
        pixels = load_image(objects, content, SYNC_LIMITS)
        return [_entry(IMAGE, vectors.image_embedding(pixels, dimension, content.detail_level))]
    loaded = load_audio_or_video(objects, content, SYNC_LIMITS)
    series = _media_series(loaded, content, ((0.0, loaded.info.duration_seconds),), dimension)
    return [_entry(each.embedding_type, _only_vector(each)) for each in series]


def plan_segmented(objects: ObjectStore, request: EmbeddingRequest) -> SegmentPlan:
    """Check a SEGMENTED_EMBEDDING request's content at submission and size up its job.

    Reads the source, checks its size, format and length, and counts its segments against the
    caps (1,900 text segments, 1,434 audio or video segments). Media is probed, not decoded.
    """
    content = request.content
    if isinstance(content, TextInput):
        text = load_text(objects, content, ASYNC_LIMITS)
        count = len(_text_spans(text, content))
        return SegmentPlan(0.0, count)
    if isinstance(content, ImageInput):
        load_image(objects, content, ASYNC_LIMITS)
        return SegmentPlan(0.0, 1)
    loaded = load_audio_or_video(objects, content, ASYNC_LIMITS)
    spans = _time_spans(loaded, content)
    return SegmentPlan(loaded.info.duration_seconds, len(spans))


def segmented_embeddings(
    objects: ObjectStore, request: EmbeddingRequest
) -> tuple[EmbeddingSeries, ...]:
    """Every output file's segments for a SEGMENTED_EMBEDDING request, computed now.

    The source is read and checked again (it may have changed since submission); a problem
    raises the ValidationException that the job then reports as its failure.
    """
    content, dimension = request.content, request.embedding_dimension
    if isinstance(content, TextInput):
        text = load_text(objects, content, ASYNC_LIMITS)
        return (_text_series(text, content, dimension),)
    if isinstance(content, ImageInput):
        pixels = load_image(objects, content, ASYNC_LIMITS)
        vector = vectors.image_embedding(pixels, dimension, content.detail_level)
        return (EmbeddingSeries(IMAGE, (Segment({"segmentIndex": 0}, vector),)),)
    loaded = load_audio_or_video(objects, content, ASYNC_LIMITS)
    return _media_series(loaded, content, _time_spans(loaded, content), dimension)


def _text_series(text: str, content: TextInput, dimension: int) -> EmbeddingSeries:
    segments = []
    for index, (start, end) in enumerate(_text_spans(text, content)):
        metadata = {
            "segmentIndex": index,
            "segmentStartCharPosition": start,
            "segmentEndCharPosition": end,
            "truncatedCharLength": 0,
        }
        try:
            kept, cut_at = vectors.truncated_text(text[start:end], content.truncation_mode)
        except ValueError as err:
            segments.append(Segment(metadata, None, INVALID_CONTENT, str(err)))
            continue
        metadata["truncatedCharLength"] = cut_at or 0
        segments.append(Segment(metadata, vectors.text_embedding(kept, dimension)))
    return EmbeddingSeries(TEXT, tuple(segments))


def _media_series(
    loaded: LoadedMedia,
    content: AudioInput | VideoInput,
    spans: tuple[tuple[float, float], ...],
    dimension: int,
) -> tuple[EmbeddingSeries, ...]:
    """Audio, video or combined vectors of ``spans`` (seconds) of a checked media file."""
    where = describe(content.source)
    samples = decoded_samples(loaded, where)
    metadata = [
        {"segmentIndex": index, "segmentStartSeconds": start, "segmentEndSeconds": end}
        for index, (start, end) in enumerate(spans)
    ]

    def audio_series() -> EmbeddingSeries:
        audio = [
            Segment(meta, vectors.audio_embedding(samples, AUDIO_SAMPLE_RATE, *span, dimension))
            for meta, span in zip(metadata, spans, strict=True)
        ]
        return EmbeddingSeries(AUDIO, tuple(audio))

    if isinstance(content, AudioInput):
        return (audio_series(),)
    timestamps, frames = decoded_frames(loaded, where)
    if content.embedding_mode == AUDIO_VIDEO_COMBINED:
        combined = [
            Segment(
                meta,
                vectors.audio_video_embedding(
                    timestamps, frames, samples, AUDIO_SAMPLE_RATE, *span, dimension
                ),
            )
            for meta, span in zip(metadata, spans, strict=True)
        ]
        return (EmbeddingSeries(AUDIO_VIDEO_COMBINED, tuple(combined)),)
    video = [
        Segment(meta, vectors.video_embedding(timestamps, frames, *span, dimension))
        for meta, span in zip(metadata, spans, strict=True)
    ]
    return (EmbeddingSeries(VIDEO, tuple(video)), audio_series())


def _text_spans(text: str, content: TextInput) -> list[tuple[int, int]]:
    assert content.segment_chars is not None  # set for every SEGMENTED_EMBEDDING text input
    spans = segmentation.text_segments(text, content.segment_chars)
    if len(spans) > MAX_TEXT_SEGMENTS:
        raise bedrock_validation(
            f"The text would be cut into {len(spans)} segments of at most "
            f"{content.segment_chars} characters; at most {MAX_TEXT_SEGMENTS} are allowed "
            f"({describe(content.source)})."
        )
    return spans


def _time_spans(
    loaded: LoadedMedia, content: AudioInput | VideoInput
) -> tuple[tuple[float, float], ...]:
    assert content.segment_seconds is not None  # set for every SEGMENTED_EMBEDDING media input
    duration = loaded.info.duration_seconds
    spans = tuple(segmentation.time_segments(duration, content.segment_seconds))
    if len(spans) > MAX_MEDIA_SEGMENTS:
        raise bedrock_validation(
            f"The {duration:.1f}-second media would be cut into {len(spans)} segments of "
            f"{content.segment_seconds} s; at most {MAX_MEDIA_SEGMENTS} are allowed. Use a longer "
            f"durationSeconds ({describe(content.source)})."
        )
    return spans


def _only_vector(series: EmbeddingSeries) -> np.ndarray:
    vector = series.segments[0].embedding
    assert vector is not None  # whole-file embeddings never fail on their own
    return vector


def _entry(embedding_type: str, vector: np.ndarray) -> dict[str, Any]:
    return {"embeddingType": embedding_type, "embedding": vector.tolist()}
