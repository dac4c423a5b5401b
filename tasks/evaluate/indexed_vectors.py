"""The vectors the index was loaded from, read back from the checkpoints.

The index holds each key's latest vector: the one the newest checkpoint file that has the key
wrote. The keys it holds come from the index's state. Files are read newest first and each
key is taken from the first file that has it, so a key re-embedded by a later run is never
counted twice, and keys of removed items (in older checkpoints, not in the state) not at all.
Everything stays in Arrow: the held keys are one string array, not a Python object per key.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from tasks.evaluate.exact_search import checkpoint_blocks
from tasks.state.dataset import StateDataset
from tasks.store import CheckpointStore


def held_keys(store: CheckpointStore, vector_bucket: str, index: str) -> pa.Array:
    """Every key the index holds after the last committed run (unique; empty before one)."""
    batches = StateDataset(store, vector_bucket, index).batches(["keys"])
    keys = [pc.list_flatten(batch.column("keys")) for batch in batches]
    if not keys:
        return pa.array([], pa.string())
    return pc.unique(pa.chunked_array(keys, pa.string()).combine_chunks())


def checkpoint_files_newest_first(store: CheckpointStore) -> list[str]:
    """Every embeddings checkpoint file of every run, the most recently written first."""
    selector = pafs.FileSelector(store.embeddings_root(), recursive=True, allow_not_found=True)
    infos = [
        info
        for info in store.filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
        and info.path.endswith(".parquet")
        and not info.base_name.startswith(".tmp-")
    ]
    infos.sort(key=lambda info: (info.mtime_ns or 0, info.path), reverse=True)
    return [info.path for info in infos]


def indexed_vector_batches(
    store: CheckpointStore,
    keys: pa.Array,
    block_rows: int,
    columns: Sequence[str] = ("key", "embedding"),
    files: Sequence[str] | None = None,
    config_hash: str | None = None,
) -> Iterator[pa.RecordBatch]:
    """The latest checkpointed row of each of ``keys``, in blocks of at most ``block_rows``
    rows holding ``columns`` (``key`` among them). With ``config_hash``, only rows embedded
    with that configuration count: a store may hold the checkpoints of another index (a
    backfill into a new dimension) under the same keys."""
    wanted = list(dict.fromkeys(["key", *columns, *(["config_hash"] if config_hash else [])]))
    remaining = keys
    for path in checkpoint_files_newest_first(store) if files is None else files:
        if len(remaining) == 0:
            return
        found: list[pa.Array] = []
        for batch in checkpoint_blocks(store.filesystem, [path], block_rows, wanted):
            mask = pc.is_in(batch.column("key"), value_set=remaining)
            if config_hash:
                mask = pc.and_(mask, pc.equal(batch.column("config_hash"), config_hash))
            held = batch.filter(mask)
            if held.num_rows:
                found.append(held.column("key"))
                yield held.select(list(columns))
        if found:
            taken = pa.concat_arrays(found)
            remaining = remaining.filter(pc.invert(pc.is_in(remaining, value_set=taken)))
