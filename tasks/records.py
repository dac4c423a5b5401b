"""The records novaflow passes between its stages: items, units and quarantined failures.

All are immutable; metadata travels as a JSON string so a record stays hashable and a Parquet
row stays one flat, typed line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from secrets import token_hex
from typing import Any, Literal

Modality = Literal["text", "pdf", "image", "audio", "video"]
MODALITIES: tuple[Modality, ...] = ("text", "pdf", "image", "audio", "video")

UnitKind = Literal["text_chunk", "text", "image", "pdf_page", "audio", "video"]
Route = Literal["sync", "async"]
Stage = Literal["manifest", "plan", "prepare", "embed", "load"]

ROW_STAGE: Stage = "manifest"
"""The stage of a failed manifest row: a row rejected in place of an item (bad row, duplicate
id …), so its failure belongs to no item's state, whatever id it carries."""


@dataclass(frozen=True)
class Item:
    """One corpus entry, resolved: where it is, what it is and which version of it we saw.

    ``fingerprint`` changes exactly when the content does: ``etag:<ETag>:<size>`` for S3
    objects, ``sha256:<hex>`` for local files.
    """

    item_id: str
    uri: str
    modality: Modality
    fingerprint: str
    size_bytes: int
    metadata_json: str = "{}"
    encoding: str | None = None  # declared text encoding, if the manifest gave one
    # The manifest row it came from (1-based; 0 when none): of the rows that claim one item
    # id, the first keeps it, as the plan decides (``tasks.plan.claims``). Not part of what
    # the item is, so two reads of one item are equal whatever rows they came from.
    position: int = field(default=0, compare=False, repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        """The item's user metadata as a dict (a fresh copy)."""
        return json.loads(self.metadata_json)


@dataclass(frozen=True)
class Unit:
    """One thing that gets one embedding (two for separate audio/video), under a stable key.

    ``key`` is also the S3 Vectors key: ``<item_id>`` for an image, ``<item_id>#page=3`` for a
    PDF page (1-based), ``<item_id>#chunk=0`` for a text chunk (characters ``char_start`` to
    ``char_end``), ``<item_id>#t=0.0-20.0`` for a whole short clip. ``route`` says whether it is
    embedded synchronously or left to an async job.
    """

    key: str
    item_id: str
    uri: str
    kind: UnitKind
    route: Route = "sync"
    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    start_seconds: float | None = None
    end_seconds: float | None = None
    metadata_json: str = "{}"
    fingerprint: str = ""  # the item's, so a stage can fetch the very version that was planned
    encoding: str | None = None  # the item's declared text encoding
    # What the model is sent, hashed (set by the plan, kept in its routing table, not in the
    # shards): under one embedding config, units with one digest have one vector.
    digest: str = ""


@dataclass(frozen=True)
class Failure:
    """A quarantined item or unit: where it failed, a stable error code and a message a person
    can act on. ``unit_key`` is None when the whole item failed before it had units."""

    item_id: str
    uri: str
    stage: Stage
    code: str
    message: str
    unit_key: str | None = None
    attempts: int = 1
    # A manifest row that failed after claiming its item id (a given id is claimed before its
    # file is checked): the row's position, so the plan can tell which row keeps the id
    # (``tasks.plan.claims``); 0 for every other failure.
    claimed_at: int = field(default=0, compare=False, repr=False)


def routed(units: tuple[Unit, ...], route: Route) -> tuple[Unit, ...]:
    """The units of ``units`` that take ``route``, in order."""
    return tuple(unit for unit in units if unit.route == route)


def metadata_json(metadata: Mapping[str, Any] | None) -> str:
    """Canonical JSON for metadata: sorted keys, no spaces, so equal metadata is equal text
    ("{}" for None or no metadata)."""
    if not metadata:
        # Most rows give no metadata; this skips a json.dumps per row.
        return "{}"
    return json.dumps(dict(metadata), sort_keys=True, separators=(",", ":"))


def image_key(item_id: str) -> str:
    """The unit key of an item embedded as one image."""
    return item_id


def page_key(item_id: str, page: int) -> str:
    """The unit key of a PDF page (``page`` is 1-based)."""
    return f"{item_id}#page={page}"


def chunk_key(item_id: str, chunk: int) -> str:
    """The unit key of a text chunk (``chunk`` is 0-based)."""
    return f"{item_id}#chunk={chunk}"


def span_key(item_id: str, start_seconds: float, end_seconds: float) -> str:
    """The unit key of a stretch of audio or video, e.g. ``talk#t=15.0-30.0``."""
    return f"{item_id}#t={start_seconds:.1f}-{end_seconds:.1f}"


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261121t101500z-3fa2``."""
    return f"{datetime.now(UTC):%Y%m%dt%H%M%Sz}-{token_hex(2)}"
