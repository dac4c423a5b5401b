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
from tasks.vector_store import RetrievalMode, query, text_search_status


class TextSearchUnavailableError(RuntimeError):
    """A text or hybrid search of an index that does not search text (yet)."""


@dataclass(frozen=True)
class SearchHit:
    """One result: the unit's key, its distance to the query (None when the vector search did
    not find it: a text match only), the index's scores (``fused``, ``bm25Scores``,
    ``vectorDistance``; None for a vector search), and where in its item it is."""

    key: str
    distance: float | None
    metadata: Mapping[str, Any]
    scores: Mapping[str, Any] | None = None

    @property
    def shown_score(self) -> str:
        """The scores as the terminal shows them: the distance, the BM25 score, or the fused
        score with its parts."""
        if not self.scores:
            return f"{self.distance:.4f}" if self.distance is not None else "   -  "
        bm25 = sum(float(s.get("score", 0.0)) for s in self.scores.get("bm25Scores", []))
        if "fused" in self.scores:
            distance = self.scores.get("vectorDistance")
            shown = f"{distance:.4f}" if distance is not None else "-"
            return f"fused {float(self.scores['fused']):.4f} (bm25 {bm25:.2f}, distance {shown})"
        return f"bm25 {bm25:.3f}"

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
    mode: RetrievalMode = "vector",
) -> list[SearchHit]:
    """The ``top_k`` best matches to the query, best first: nearest embeddings (``vector``),
    full-text matches of ``text`` in the searchable text (``text``), or both fused by the index
    (``hybrid``). Raises TextSearchUnavailableError for a text or hybrid search of an index
    whose searchable text is not (yet) searchable."""
    client = s3vectors_client()
    if mode != "vector":
        status = text_search_status(client, settings.index)
        if status != "ACTIVE":
            raise TextSearchUnavailableError(
                "this index has no searchable text: run with searchable text on "
                "(NOVAFLOW_INDEX__SEARCHABLE_TEXT=true) first"
                if status is None
                else "the index is still building its full-text search; try again shortly"
            )
    vector = None
    if mode != "text":
        store = CheckpointStore(settings.store)
        held = held_modalities(store, settings.index.vector_bucket, settings.index.index)
        payload = query_payload(text, file, settings.embedding.max_image_side_px)
        vector = query_vector(payload, settings.embedding, held)
    hits = query(
        client, settings.index, vector, top_k, metadata_filter,
        text=text if mode != "vector" else None,
    )  # fmt: skip
    return [
        SearchHit(
            hit["key"],
            None if hit["distance"] is None else float(hit["distance"]),
            hit.get("metadata", {}),
            hit.get("scores"),
        )
        for hit in hits
    ]
