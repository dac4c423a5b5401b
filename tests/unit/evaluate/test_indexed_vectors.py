"""What the index was loaded from, read back: each held key's newest vector, of the index's own
embedding configuration, and nothing of removed items."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks import schemas
from tasks.evaluate.exact_search import embedding_matrix
from tasks.evaluate.indexed_vectors import indexed_vector_batches
from tasks.store import CheckpointStore


def _checkpoint(
    store: CheckpointStore, run_id: str, keys: list[str], value: float, config: str, at: int
) -> None:
    dimension = 4
    vectors = np.full((len(keys), dimension), value, dtype=np.float32)
    table = pa.table(
        {
            "key": keys,
            "item_id": keys,
            "embedding_type": ["TEXT"] * len(keys),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dimension),
            "metadata_json": ["{}"] * len(keys),
            "config_hash": [config] * len(keys),
        },
        schema=schemas.embeddings_schema(dimension),
    )
    path = store.embeddings_path(run_id, 1)
    store.write_table(path, table)
    os.utime(path, (at, at))


def _read(store: CheckpointStore, held: list[str], config: str | None) -> dict[str, float]:
    found: dict[str, float] = {}
    for batch in indexed_vector_batches(store, pa.array(held), 2, config_hash=config):
        matrix = embedding_matrix(batch.column("embedding"))
        for key, row in zip(batch.column("key").to_pylist(), matrix, strict=True):
            assert key not in found, f"{key} read twice"
            found[key] = float(row[0])
    return found


def test_each_held_key_comes_from_the_newest_checkpoint_that_has_it(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    _checkpoint(store, "first", ["a", "b", "gone"], 1.0, "cfg", at=1_000)
    _checkpoint(store, "second", ["b", "c"], 2.0, "cfg", at=2_000)
    assert _read(store, ["a", "b", "c"], "cfg") == {"a": 1.0, "b": 2.0, "c": 2.0}


def test_rows_of_another_embedding_configuration_never_count(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path))
    _checkpoint(store, "nightly", ["a", "b"], 1.0, "index-v1", at=1_000)
    _checkpoint(store, "backfill-v2", ["a", "b"], 2.0, "index-v2", at=2_000)  # a newer index
    assert _read(store, ["a", "b"], "index-v1") == {"a": 1.0, "b": 1.0}
    assert _read(store, ["a", "b"], "index-v2") == {"a": 2.0, "b": 2.0}
