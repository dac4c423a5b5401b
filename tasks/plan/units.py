"""An item's units: what of it gets an embedding, under which key, synchronously or not.

Expanding an item opens it just enough to count its units (a PDF's page tree, a text's chunks,
a clip's duration) without rendering or embedding anything, so planning is cheap and a plan
can be trusted before a backfill.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from tasks.media.facts import media_facts
from tasks.media.images import PreparationError
from tasks.media.pdf_pages import pdf_page_count
from tasks.media.texts import decoded_text, text_chunks
from tasks.nova.segmented import AsyncInputError, checked_async_input
from tasks.records import Item, Unit, chunk_key, image_key, page_key, routed, span_key
from tasks.settings import EmbeddingSettings, Prices

SYNC_MEDIA_MAX_SECONDS = 30.0  # aws-apis.md §1.2: audio and video over 30 s need the async API
# Media sync calls carry local files inline: 25 MB after base64 (§1.7) is 18.75 MB of file.
SYNC_INLINE_MAX_BYTES = 18_750_000
SYNC_S3_MEDIA_MAX_BYTES = 100_000_000  # §1.7: sync audio/video read from S3
CHARS_PER_TOKEN_ESTIMATE = 4.0  # a planning estimate only; Nova bills the tokens it counts


@dataclass(frozen=True)
class Expansion:
    """An item's units and what embedding them is estimated to cost."""

    units: tuple[Unit, ...]
    estimated_cost_usd: float

    @property
    def sync_units(self) -> tuple[Unit, ...]:
        """The units embedded with InvokeModel."""
        return routed(self.units, "sync")

    @property
    def async_units(self) -> tuple[Unit, ...]:
        """The units left to an async job (their segment keys are known only when it ends)."""
        return routed(self.units, "async")


def expanded_item(
    item: Item, local_path: Path, settings: EmbeddingSettings, prices: Prices
) -> Expansion:
    """The units of ``item`` (whose bytes are at ``local_path``); PreparationError for bad input."""
    base = {
        "item_id": item.item_id,
        "uri": item.uri,
        "metadata_json": item.metadata_json,
        "fingerprint": item.fingerprint,
        "encoding": item.encoding,
    }
    if item.modality == "pdf":
        pages = pdf_page_count(str(local_path))
        units = tuple(
            Unit(
                key=page_key(item.item_id, page),
                kind="pdf_page",
                page=page,
                digest=input_digest("pdf_page", f"{item.fingerprint}#page={page}"),
                **base,
            )
            for page in range(1, pages + 1)
        )
        return Expansion(units, pages * prices.per_image)
    if item.modality == "image":
        return Expansion(
            (
                Unit(
                    key=image_key(item.item_id),
                    kind="image",
                    digest=input_digest("image", item.fingerprint),
                    **base,
                ),
            ),
            prices.per_image,
        )
    if item.modality == "text":
        text = decoded_text(local_path.read_bytes(), item.encoding)
        if len(text) > settings.async_text_over_chars:
            # Nova reads it from S3 and cuts it itself; the segment keys are known at the end.
            _async_checked(item, settings, char_count=len(text))
            tokens_estimate = math.ceil(len(text) / CHARS_PER_TOKEN_ESTIMATE)
            text_cost = tokens_estimate * prices.text_per_million_tokens / 1_000_000
            unit = Unit(
                key=item.item_id,
                kind="text",
                route="async",
                char_start=0,
                char_end=len(text),
                **base,
            )
            return Expansion((unit,), text_cost)
        spans = text_chunks(text, settings.text_chunk_chars)
        units = tuple(
            Unit(
                key=chunk_key(item.item_id, n),
                kind="text_chunk",
                char_start=start,
                char_end=end,
                digest=input_digest("text_chunk", text[start:end]),
                **base,
            )
            for n, (start, end) in enumerate(spans)
        )
        tokens = sum(math.ceil((end - start) / CHARS_PER_TOKEN_ESTIMATE) for start, end in spans)
        return Expansion(units, tokens * prices.text_per_million_tokens / 1_000_000)
    if item.modality in ("audio", "video"):
        facts = media_facts(str(local_path), item.modality)
        per_second = (
            prices.audio_per_second if item.modality == "audio" else prices.video_per_second
        )
        cost = facts.duration_seconds * per_second
        sync_max_bytes = (
            SYNC_S3_MEDIA_MAX_BYTES if item.uri.startswith("s3://") else SYNC_INLINE_MAX_BYTES
        )
        if (
            facts.duration_seconds <= SYNC_MEDIA_MAX_SECONDS
            and item.size_bytes <= sync_max_bytes
            and not settings.all_media_async
        ):
            unit = Unit(
                key=span_key(item.item_id, 0.0, facts.duration_seconds),
                kind=item.modality,
                start_seconds=0.0,
                end_seconds=facts.duration_seconds,
                digest=input_digest(
                    item.modality, f"{item.fingerprint}#t=0-{facts.duration_seconds}"
                ),
                **base,
            )
            return Expansion((unit,), cost)
        # Longer media go to an async job whose segment keys are only known when it ends: the
        # placeholder, keyed by the item, stands for all of them in the plan and the ledger.
        _async_checked(item, settings, duration_seconds=facts.duration_seconds)
        placeholder = Unit(
            key=item.item_id,
            kind=item.modality,
            route="async",
            start_seconds=0.0,
            end_seconds=facts.duration_seconds,
            **base,
        )
        return Expansion((placeholder,), cost)
    raise PreparationError("unsupported_type", f"novaflow cannot embed {item.modality!r} items")


def input_digest(kind: str, content: str) -> str:
    """The digest of what a unit sends the model: its text for a chunk; for a page, an image or
    a clip, the item's content fingerprint (a SHA-256 of local bytes, an S3 ETag and size) and
    where in it, since the bytes sent follow from those and the embedding config."""
    return hashlib.sha256(f"{kind}\n{content}".encode()).hexdigest()


def _async_checked(
    item: Item,
    settings: EmbeddingSettings,
    duration_seconds: float | None = None,
    char_count: int | None = None,
) -> None:
    """Check ``item`` against the async limits; a breach is the PreparationError planning
    quarantines an item with."""
    try:
        checked_async_input(
            item.modality,  # type: ignore[arg-type]
            item.size_bytes,
            settings,
            duration_seconds=duration_seconds,
            char_count=char_count,
        )
    except AsyncInputError as err:
        raise PreparationError(err.code, str(err)) from None
