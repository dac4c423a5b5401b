"""Stages 3 and 4 of a run: load the checkpointed embeddings into S3 Vectors, delete the stale
keys, then commit the index's new state.

Both are idempotent: a put overwrites a key with the same vector, a delete of an absent key is a
no-op, and the state is replaced in one atomic write only after the index is up to date.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tasks.aws_clients import s3vectors_client
from tasks.job_ledger import JobLedger
from tasks.outcomes import LoadOutcome
from tasks.pacing import Pacer
from tasks.records import ROW_STAGE
from tasks.service_errors import RETRIED_NEXT_RUN_CODES
from tasks.settings import NovaflowSettings
from tasks.state import StateEntry, read_state, write_state
from tasks.store import CheckpointStore, is_job_part
from tasks.tables import async_units
from tasks.vector_store import delete_vectors, ensure_index, put_vectors


def _embedding_rows(
    store: CheckpointStore, run_id: str
) -> Iterator[tuple[str, np.ndarray, Mapping[str, Any]]]:
    for path in store.list_files(store.embeddings_dir(run_id)):
        parquet = pq.ParquetFile(path, filesystem=store.filesystem)
        for batch in parquet.iter_batches(batch_size=500):
            keys = batch.column("key").to_pylist()
            metadata = batch.column("metadata_json").to_pylist()
            embeddings = batch.column("embedding")
            vectors = embeddings.values.to_numpy().reshape(len(batch), embeddings.type.list_size)
            for key, vector, meta in zip(keys, vectors, metadata, strict=True):
                yield key, vector, json.loads(meta)


def _planned_deletions(store: CheckpointStore, run_id: str) -> Iterator[str]:
    parquet = pq.ParquetFile(store.plan_path(run_id), filesystem=store.filesystem)
    for batch in parquet.iter_batches(columns=["keys_to_delete"]):
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
    state = read_state(store, settings.index.vector_bucket, settings.index.index)
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
    its async jobs made stale."""
    store = CheckpointStore(settings.store)
    client = s3vectors_client()
    ensure_index(client, settings.index, settings.embedding.dimension)
    pacer = Pacer(settings.throughput.index_vectors_per_second)
    put = put_vectors(client, settings.index, _embedding_rows(store, run_id), pacer)
    stale = chain(_planned_deletions(store, run_id), _async_deletions(store, settings, run_id))
    deleted = delete_vectors(client, settings.index, stale, pacer)
    return LoadOutcome(
        vectors_written=put.vectors_written,
        put_batches=put.batches,
        keys_deleted=deleted,
        metadata_warnings=tuple(put.warnings),
    )


def _column_rows(store: CheckpointStore, paths: list[str], columns: list[str]) -> Iterator[dict]:
    for path in paths:
        parquet = pq.ParquetFile(path, filesystem=store.filesystem)
        for batch in parquet.iter_batches(columns=columns):
            yield from batch.to_pylist()


def committed_state(settings: NovaflowSettings, run_id: str) -> int:
    """Replace the index's state with what it holds after this run; returns the item count.

    An item whose units all made it is ``complete``; one that failed through its own fault, in
    planning or in any unit, is ``quarantined`` (left alone until it changes); one with
    transient failures is ``incomplete`` when this run loaded some of its vectors (its keys: all
    it may hold, so a later removal deletes them), else it keeps its previous entry; either way
    the next run plans it again.

    Only an item's own failures decide its state: those of the plan stage or later. A manifest
    row's failure (:data:`ROW_STAGE`) is a row that never became an item, and the id it carries
    may be another row's: a duplicate's is the id of the row that kept it.
    """
    store = CheckpointStore(settings.store)
    index = settings.index
    state = read_state(store, index.vector_bucket, index.index)
    config_hash = settings.embedding.config_hash()
    embedded: defaultdict[str, list[str]] = defaultdict(list)
    for row in _column_rows(
        store, store.list_files(store.embeddings_dir(run_id)), ["key", "item_id"]
    ):
        embedded[row["item_id"]].append(row["key"])
    failure_codes: defaultdict[str, set[str]] = defaultdict(set)
    failure_files = store.list_files(store.run_failures_dir(run_id))
    for row in _column_rows(store, failure_files, ["item_id", "stage", "code"]):
        if row["stage"] != ROW_STAGE:
            failure_codes[row["item_id"]].add(row["code"])
    manifest = {
        row["item_id"]: row
        for row in _column_rows(
            store,
            [store.manifest_path(run_id)],
            ["item_id", "uri", "fingerprint", "modality", "metadata_json"],
        )
    }

    def entry(item_id: str, keys: Iterable[str], status: str) -> StateEntry:
        source = manifest[item_id]
        return StateEntry(
            item_id=item_id,
            uri=source["uri"],
            fingerprint=source["fingerprint"],
            config_hash=config_hash,
            keys=tuple(sorted(keys)),
            status=status,
            modality=source["modality"],
            metadata_json=source["metadata_json"],
        )

    planned = _column_rows(store, [store.plan_path(run_id)], ["item_id", "change"])
    for row in planned:
        item_id, change = row["item_id"], row["change"]
        if change == "removed":
            state.pop(item_id, None)
            continue
        if change == "unchanged":
            continue
        codes = failure_codes.get(item_id, set())
        if codes & RETRIED_NEXT_RUN_CODES:
            if embedded.get(item_id):
                previous = state.get(item_id)
                held = set(previous.keys if previous else ()) | set(embedded[item_id])
                state[item_id] = entry(item_id, held, "incomplete")
            continue
        # An item that failed planning is remembered too, with no keys, so that an unchanged
        # corpus is not planned again.
        status = "quarantined" if codes else "complete"
        state[item_id] = entry(item_id, embedded.get(item_id, []), status)
    return write_state(store, index.vector_bucket, index.index, state.values())
