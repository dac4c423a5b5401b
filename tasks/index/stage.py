"""Stages 3 and 4 of a run: load the checkpointed embeddings into S3 Vectors, delete the stale
keys, then commit the index's new state.

Both are idempotent: a put overwrites a key with the same vector, a delete of an absent key is a
no-op, and the state's touched partitions are rewritten only after the index is up to date
(an interrupted commit is finished by the next run: :mod:`tasks.state.commit`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from typing import Any, TypeVar

import numpy as np

from tasks.aws_clients import s3vectors_client
from tasks.index.put_requests import VectorBlock
from tasks.index.reused_vectors import recorded_digests, written_reused_vectors
from tasks.index.searchable_text import TextCounts, held_vectors, with_searchable_texts
from tasks.job_ledger import JobLedger
from tasks.outcomes import LoadOutcome
from tasks.pacing import Pacer
from tasks.service_errors import RETRIED_NEXT_RUN_CODES
from tasks.settings import NovaflowSettings
from tasks.state.commit import committed_run
from tasks.state.dataset import StateDataset
from tasks.store import CheckpointStore, is_job_part
from tasks.tables import async_units
from tasks.vector_store import (
    SEARCHABLE_TEXT_KEY,
    delete_vectors,
    ensure_index,
    put_vector_blocks,
    put_vectors,
)

_T = TypeVar("_T")


def _embedding_blocks(store: CheckpointStore, run_id: str) -> Iterator[VectorBlock]:
    """The run's checkpointed vectors, 500 rows a block, with their metadata."""
    for path in store.list_files(store.embeddings_dir(run_id)):
        for batch in store.batches(path, batch_size=500):
            if len(batch) == 0:
                continue
            keys = batch.column("key").to_pylist()
            embeddings = batch.column("embedding")
            vectors = embeddings.values.to_numpy().reshape(len(batch), embeddings.type.list_size)
            metadata: list[Mapping[str, Any]] = []
            try:
                for text in batch.column("metadata_json").to_pylist():
                    metadata.append(json.loads(text))
            except Exception:
                # The rows before one that cannot be read are put first, as they always were.
                if metadata:
                    yield VectorBlock(keys[: len(metadata)], vectors[: len(metadata)], metadata)
                raise
            yield VectorBlock(keys, vectors, metadata)


def _rows(blocks: Iterable[VectorBlock]) -> Iterator[tuple[str, np.ndarray, Mapping[str, Any]]]:
    for block in blocks:
        yield from zip(block.keys, block.vectors, block.metadata, strict=True)


def _nonempty(items: Iterator[_T]) -> Iterator[_T] | None:
    """``items`` as they were, or None when there are none (reading the first to know)."""
    for first in items:
        return chain((first,), items)
    return None


def _planned_deletions(store: CheckpointStore, run_id: str) -> Iterator[str]:
    for batch in store.batches(store.plan_path(run_id), ["keys_to_delete"]):
        for keys in batch.column("keys_to_delete").to_pylist():
            yield from keys


def _async_deletions(store: CheckpointStore, settings: NovaflowSettings, run_id: str) -> list[str]:
    """Keys of async items that this run's jobs made stale, known only now that they ended: a
    collected job replaces all of its item's old keys (a shorter new version leaves fewer), and
    a job refused for its input's own fault leaves the item with none; a job that failed
    transiently leaves the old vectors in place for the next run."""
    units = async_units(store, run_id)
    if not units:
        return []
    state = StateDataset(store, settings.index.vector_bucket, settings.index.index).lookup()
    latest = JobLedger(store, run_id).latest_by_unit()
    new_keys: defaultdict[str, set[str]] = defaultdict(set)
    job_parts = [
        path for path in store.list_files(store.embeddings_dir(run_id)) if is_job_part(path)
    ]
    for row in _column_rows(store, job_parts, ["key", "item_id"]):
        new_keys[row["item_id"]].add(row["key"])
    stale: list[str] = []
    for unit in units:
        previous, record = state.get(unit.item_id), latest.get(unit.key)
        if previous is None or record is None:
            continue
        if record.status == "collected":
            stale.extend(key for key in previous.keys if key not in new_keys[unit.item_id])
        elif record.status == "quarantined" and record.code not in RETRIED_NEXT_RUN_CODES:
            stale.extend(previous.keys)
    return stale


def loaded_index(settings: NovaflowSettings, run_id: str) -> LoadOutcome:
    """Put every vector the run embedded, then delete the keys its plan marked stale and those
    its async jobs made stale.

    Every run first checks the index (two reads when it exists): an index whose configuration
    no longer matches the settings is refused, and so is a missing index the state lists items
    in (deleted outside novaflow: made again, it would hold only what changed). A run with
    nothing to put or delete, on an index that an earlier run loaded and committed with the
    same searchable-text setting, makes no other call. A first run makes its index even
    empty."""
    store = CheckpointStore(settings.store)
    config_hash = settings.embedding.config_hash()
    written_reused_vectors(store, run_id, settings.embedding.dimension, config_hash)
    blocks = _nonempty(_embedding_blocks(store, run_id))
    state = StateDataset(store, settings.index.vector_bucket, settings.index.index)
    layout = state.layout()
    client = s3vectors_client()
    non_filterable = ensure_index(
        client, settings.index, settings.embedding.dimension, held_items=layout.items
    )
    stale: Iterator[str] | None = None
    if (
        blocks is None
        and layout.last_run
        and layout.searchable_text == settings.index.searchable_text
    ):
        stale = _nonempty(_stale_keys(store, settings, run_id))
        if stale is None:
            return LoadOutcome(
                vectors_written=0, put_batches=0, keys_deleted=0, metadata_warnings=()
            )
    # Fitted to the keys the index really has (one made before searchable text keeps its own).
    index = settings.index.model_copy(update={"non_filterable_keys": tuple(non_filterable)})
    pacer = Pacer(settings.throughput.index_vectors_per_second)
    texts = TextCounts()
    if index.searchable_text:
        rows: Iterable[tuple[str, np.ndarray, Mapping[str, Any]]] = _rows(blocks or ())
        if not layout.searchable_text:
            # Turned on for an index that holds vectors without their text: every vector it
            # holds is written again with it (read back from the index, not embedded again),
            # before this run's own, which win.
            rows = chain(held_vectors(client, index, state, pacer), rows)
        rows = with_searchable_texts(rows, texts, SEARCHABLE_TEXT_KEY not in non_filterable)
        put = put_vectors(client, index, rows, pacer)
    else:
        put = put_vector_blocks(client, index, blocks or (), pacer)
    if stale is None:
        stale = _stale_keys(store, settings, run_id)
    deleted = delete_vectors(client, index, stale, pacer)
    return LoadOutcome(
        vectors_written=put.vectors_written,
        put_batches=put.batches,
        keys_deleted=deleted,
        metadata_warnings=tuple(put.warnings),
        texts_attached=texts.attached,
        texts_truncated=texts.truncated,
    )


def _stale_keys(store: CheckpointStore, settings: NovaflowSettings, run_id: str) -> Iterator[str]:
    """The keys this run deletes: those its plan marked stale (read as they are taken), then
    those its async jobs made stale (worked out now)."""
    return chain(_planned_deletions(store, run_id), _async_deletions(store, settings, run_id))


def _column_rows(store: CheckpointStore, paths: list[str], columns: list[str]) -> Iterator[dict]:
    for path in paths:
        for batch in store.batches(path, columns):
            yield from batch.to_pylist()


def committed_state(settings: NovaflowSettings, run_id: str) -> int:
    """Bring the index's state up to date with what this run loaded (only the partitions it
    touched); returns how many items the index now holds. See :func:`committed_run`."""
    store = CheckpointStore(settings.store)
    index = settings.index
    config_hash = settings.embedding.config_hash()
    held = committed_run(
        store, index.vector_bucket, index.index, run_id, config_hash, index.searchable_text
    )
    recorded_digests(store, run_id, config_hash)
    return held
