"""Searching the index: embed a query with the retrieval purpose matching what the index holds,
then ask S3 Vectors for the nearest units and say where each one comes from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.aws_clients import s3vectors_client
from tasks.query_vectors import held_modalities, query_payload, query_vector
from tasks.settings import NovaflowSettings
from tasks.store import CheckpointStore
from tasks.vector_store import query


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


def search_index(
    settings: NovaflowSettings,
    text: str | None,
    file: Path | None,
    top_k: int,
    metadata_filter: Mapping[str, Any] | None = None,
) -> list[SearchHit]:
    """The ``top_k`` units nearest to the query, nearest first."""
    store = CheckpointStore(settings.store)
    held = held_modalities(store, settings.index.vector_bucket, settings.index.index)
    payload = query_payload(text, file, settings.embedding.max_image_side_px)
    vector = query_vector(payload, settings.embedding, held)
    hits = query(s3vectors_client(), settings.index, vector, top_k, metadata_filter)
    return [SearchHit(hit["key"], float(hit["distance"]), hit.get("metadata", {})) for hit in hits]
