"""Where an item's state lives: its partition, and how many partitions the state has.

An item belongs to partition ``fmix32(crc32(item_id)) mod 2**bits``: stable across processes,
machines and Python versions (unlike ``hash``), and cheap enough to compute for every item of a
corpus as it streams. pyarrow has no hash kernel, so the CRC is the one per-item Python call of
the plan; the mixing is vectorised.

A state starts with one partition and doubles its partitions whenever they hold more than
:data:`MAX_MEAN_ITEMS` items on average, up to :data:`MAX_BITS` (4,096 partitions: ~25,000 items
each at 100 million). Doubling splits each partition in two (``p`` and ``p + 2**bits``), so an
item's partition at ``bits + 1`` follows from its partition at ``bits``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pyarrow as pa

RowsT = TypeVar("RowsT", pa.Table, pa.RecordBatch)

MAX_MEAN_ITEMS = 4096
"""Partitions are doubled once they hold more than this many items on average."""

MAX_BITS = 12
"""At most ``2**12`` partitions: beyond, partitions grow and their row groups stay bounded."""

LAYOUT_FORMAT = 1


def item_hashes(item_ids: Iterable[str]) -> np.ndarray:
    """The stable 32-bit hash of each item id (uint32), in order."""
    crc = np.fromiter((zlib.crc32(item_id.encode()) for item_id in item_ids), dtype=np.uint32)
    # CRC-32 is linear: ids that differ in a digit or two ("note-07", "note-17") share their
    # low bits far more often than chance. MurmurHash3's finaliser mixes every bit into all.
    crc ^= crc >> np.uint32(16)
    crc *= np.uint32(0x85EBCA6B)
    crc ^= crc >> np.uint32(13)
    crc *= np.uint32(0xC2B2AE35)
    crc ^= crc >> np.uint32(16)
    return crc


def partitions_of(item_ids: pa.Array | pa.ChunkedArray, bits: int) -> np.ndarray:
    """The partition of each item id at ``2**bits`` partitions (int64 array, in order)."""
    hashes = item_hashes(item_ids.to_pylist())
    return (hashes & np.uint32((1 << bits) - 1)).astype(np.int64)


def grouped(rows: RowsT, groups: np.ndarray) -> Iterator[tuple[int, RowsT]]:
    """The rows of ``rows`` (a table or a record batch) in each group that holds any, groups in
    ascending order, rows in their order within a group; ``groups[i]`` is row ``i``'s group.
    One sorted copy of ``rows``, sliced."""
    order = np.argsort(groups, kind="stable")
    ordered = rows.take(pa.array(order))
    sorted_groups = groups[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    ends = np.r_[starts[1:], len(sorted_groups)]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        yield int(sorted_groups[start]), ordered.slice(start, end - start)


def bits_for(items: int) -> int:
    """The fewest partition bits that keep ``items`` under :data:`MAX_MEAN_ITEMS` each."""
    bits = 0
    while bits < MAX_BITS and items > MAX_MEAN_ITEMS * (1 << bits):
        bits += 1
    return bits


@dataclass(frozen=True)
class PartitionFiles:
    """One partition as the layout lists it: its files (a base, then the deltas of later
    commits, each an upsert of rows and removals), how many items it holds, how many rows its
    deltas hold, and the modalities its items hold vectors of."""

    files: tuple[str, ...] = ()
    items: int = 0
    delta_rows: int = 0
    modalities: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The partition as ``layout.json`` lists it."""
        return {
            "files": list(self.files),
            "items": self.items,
            "delta_rows": self.delta_rows,
            "modalities": list(self.modalities),
        }

    @classmethod
    def from_json(cls, document: dict[str, object]) -> PartitionFiles:
        """The partition ``to_json`` listed."""
        return cls(
            tuple(document["files"]),  # type: ignore[arg-type]
            int(document["items"]),  # type: ignore[arg-type]
            int(document["delta_rows"]),  # type: ignore[arg-type]
            tuple(document["modalities"]),  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class StateLayout:
    """The state as of its last commit: ``2**bits`` partitions and the files of each. Writing
    a new layout is what makes a commit visible: files it does not list are not read."""

    bits: int = 0
    parts: tuple[PartitionFiles, ...] = (PartitionFiles(),)
    last_run: str = ""
    searchable_text: bool = False
    """Whether every vector the state lists carries its searchable text (see
    ``IndexSettings.searchable_text``): turning the setting on rewrites them once."""

    @property
    def partitions(self) -> int:
        """How many partitions the state has."""
        return 1 << self.bits

    @property
    def items(self) -> int:
        """How many items the state holds."""
        return sum(part.items for part in self.parts)

    @property
    def crowded(self) -> bool:
        """Whether the partitions hold too many items on average and may still be doubled."""
        return self.items > MAX_MEAN_ITEMS * self.partitions and self.bits < MAX_BITS

    @property
    def held_modalities(self) -> frozenset[str]:
        """The modalities of the items that hold at least one vector."""
        return frozenset(m for part in self.parts for m in part.modalities)

    def with_parts(self, updated: dict[int, PartitionFiles], run_id: str) -> StateLayout:
        """This layout with the ``updated`` partitions replaced, as committed by ``run_id``."""
        parts = list(self.parts)
        for number, part in updated.items():
            parts[number] = part
        return StateLayout(self.bits, tuple(parts), run_id, self.searchable_text)

    def to_json(self) -> str:
        """The layout as ``layout.json`` holds it."""
        document = {
            "format": LAYOUT_FORMAT,
            "bits": self.bits,
            "items": self.items,
            "last_run": self.last_run,
            "searchable_text": self.searchable_text,
            "partitions": [part.to_json() for part in self.parts],
        }
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StateLayout:
        """The layout ``to_json`` wrote; ValueError for a layout this novaflow cannot read."""
        document = json.loads(text)
        if document.get("format") != LAYOUT_FORMAT:
            raise ValueError(
                f"state layout format {document.get('format')!r} is not {LAYOUT_FORMAT}: "
                "written by another novaflow version"
            )
        bits = int(document["bits"])
        parts = tuple(PartitionFiles.from_json(part) for part in document["partitions"])
        if len(parts) != 1 << bits:
            raise ValueError(f"state layout lists {len(parts)} partitions, not {1 << bits}")
        return cls(
            bits,
            parts,
            str(document.get("last_run", "")),
            bool(document.get("searchable_text", False)),
        )

    @classmethod
    def empty(cls, bits: int = 0) -> StateLayout:
        """The layout of an empty state of ``2**bits`` partitions."""
        return cls(bits, (PartitionFiles(),) * (1 << bits))
