"""The index's state: what it holds, item by item (``state/<bucket>/<index>/state.parquet``).

Read by the plan (what changed), written by the commit (what the index now holds) and read by
search (which modalities the index holds). A shared contract, so no stage owns it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from tasks import schemas
from tasks.store import CheckpointStore


@dataclass(frozen=True)
class StateEntry:
    """What the index holds for one item: the version embedded, with which config, under which
    keys, and whether that is all of it (``complete``), all it could be (``quarantined``) or
    part of it after transient failures (``incomplete``, planned again by the next run)."""

    item_id: str
    uri: str
    fingerprint: str
    config_hash: str
    keys: tuple[str, ...]
    status: str = "complete"
    modality: str = ""
    metadata_json: str = "{}"


def read_state(store: CheckpointStore, vector_bucket: str, index: str) -> dict[str, StateEntry]:
    """The index's state by item id ({} before the first run)."""
    path = store.state_path(vector_bucket, index)
    if not store.exists(path):
        return {}
    table = store.read_table(path, schemas.STATE)
    return {
        row["item_id"]: StateEntry(**{**row, "keys": tuple(row["keys"])})
        for row in table.to_pylist()
    }


def write_state(
    store: CheckpointStore, vector_bucket: str, index: str, entries: Iterable[StateEntry]
) -> int:
    """Replace the index's state with ``entries`` (atomically); returns how many were written."""
    rows = [
        {
            "item_id": entry.item_id,
            "uri": entry.uri,
            "fingerprint": entry.fingerprint,
            "config_hash": entry.config_hash,
            "keys": list(entry.keys),
            "modality": entry.modality,
            "metadata_json": entry.metadata_json,
            "status": entry.status,
        }
        for entry in sorted(entries, key=lambda e: e.item_id)
    ]
    store.write_table(
        store.state_path(vector_bucket, index), pa.Table.from_pylist(rows, schema=schemas.STATE)
    )
    return len(rows)
