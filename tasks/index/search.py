"""Searching the index: embed a query with the retrieval purpose matching what the index holds,
then ask S3 Vectors for the nearest units and say where each one comes from."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.aws_clients import bedrock_runtime_client, s3vectors_client
from tasks.index.vectors import query
from tasks.media.payloads import image_file_payload, media_file_payload
from tasks.nova.requests import Payload, invoke_model_body, parsed_embeddings, query_purpose
from tasks.records import MODALITIES
from tasks.settings import NovaflowSettings
from tasks.state import read_state
from tasks.store import CheckpointStore

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
_AUDIO_SUFFIXES = {".mp3", ".wav", ".ogg"}


@dataclass(frozen=True)
class SearchHit:
    """One result: the unit's key, its distance to the query, and where in its item it is."""

    key: str
    distance: float
    metadata: Mapping[str, Any]

    @property
    def where(self) -> str:
        """A short human description: modality, source, page or time span, and for a segment of
        an async job its index and embedding type (``audio-video-combined``, ``video``,
        ``audio``, ``text``)."""
        meta = self.metadata
        parts = [
            str(meta.get("modality", "?")),
            str(meta.get("source_uri", meta.get("item_id", ""))),
        ]
        if "page" in meta:
            parts.append(f"page {meta['page']}")
        if "start_seconds" in meta and "end_seconds" in meta:
            parts.append(f"{meta['start_seconds']:.1f}–{meta['end_seconds']:.1f} s")
        if "segment_index" in meta:
            if "char_start" in meta and "char_end" in meta:
                parts.append(f"characters {meta['char_start']}–{meta['char_end']}")
            kind = str(meta.get("embedding_type", "")).lower().replace("_", "-")
            parts.append(f"segment {meta['segment_index']} ({kind})")
        return "  ".join(parts)


def query_payload(text: str | None, file: Path | None, max_image_side_px: int) -> Payload:
    """The embedding input for a text query or a query file (image, audio or video); images
    are prepared as the indexed ones were."""
    if text is not None:
        return Payload(kind="text", text=text)
    assert file is not None
    suffix = file.suffix.lower()
    if suffix in _IMAGE_SUFFIXES:
        return image_file_payload(file, max_image_side_px)
    return media_file_payload(file, "audio" if suffix in _AUDIO_SUFFIXES else "video")


def search_index(
    settings: NovaflowSettings,
    text: str | None,
    file: Path | None,
    top_k: int,
    metadata_filter: Mapping[str, Any] | None = None,
) -> list[SearchHit]:
    """The ``top_k`` units nearest to the query, nearest first."""
    store = CheckpointStore(settings.store)
    state = read_state(store, settings.index.vector_bucket, settings.index.index)
    held = {entry.modality for entry in state.values() if entry.keys} or set(MODALITIES)
    body = invoke_model_body(
        query_payload(text, file, settings.embedding.max_image_side_px),
        settings.embedding,
        query_purpose(held),
    )
    response = bedrock_runtime_client(1).invoke_model(
        modelId=settings.embedding.model_id,
        body=json.dumps(body),
        contentType="application/json",
        accept="application/json",
    )
    (_, vector), *_ = parsed_embeddings(response["body"].read(), settings.embedding.dimension)
    hits = query(s3vectors_client(), settings.index, vector, top_k, metadata_filter)
    return [SearchHit(hit["key"], float(hit["distance"]), hit.get("metadata", {})) for hit in hits]
