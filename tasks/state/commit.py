"""A run's commit: the index's state brought up to date with what the run loaded.

Only the partitions holding an item the run changed get a file, the delta of that change (see
:mod:`tasks.state.dataset`), so the bytes a commit writes follow the size of the change, not of
the state; the new layout, written last, makes them visible together. Before the first file is
written the commit records itself (``commit.json``: the run and its embedding config); once the
layout is written it removes that record. A commit interrupted in between leaves the record and
an unchanged layout, and the next run on the index finishes it (:func:`repaired_state`) before
it plans, from the run's checkpoints: the index already holds what the run loaded, so the state
catches up with it and nothing is embedded again.

What a run did to an item is decided from its checkpoints alone (its plan, embeddings, failures
and manifest), read as Arrow and kept only for the items it changed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import schemas
from tasks.records import ROW_STAGE
from tasks.service_errors import RETRIED_NEXT_RUN_CODES
from tasks.state.dataset import StateDataset, partitioned, removals
from tasks.state.layout import PartitionFiles, StateLayout, bits_for, partitions_of
from tasks.store import CheckpointStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitRecord:
    """A commit under way: the run whose outcome is being applied, with its embedding config."""

    run_id: str
    config_hash: str
    partitions: tuple[int, ...]

    def to_json(self) -> str:
        """The record as ``commit.json`` holds it."""
        return json.dumps(
            {"run_id": self.run_id, "config_hash": self.config_hash, "partitions": self.partitions}
        )

    @classmethod
    def from_json(cls, text: str) -> CommitRecord:
        """The record ``to_json`` wrote."""
        document = json.loads(text)
        return cls(document["run_id"], document["config_hash"], tuple(document["partitions"]))


def _column_batches(
    store: CheckpointStore, paths: list[str], columns: list[str]
) -> Iterator[pa.RecordBatch]:
    for path in paths:
        parquet = pq.ParquetFile(path, filesystem=store.filesystem)
        yield from parquet.iter_batches(columns=columns)


def _changed_items(store: CheckpointStore, run_id: str) -> pa.Table:
    """The plan's items other than the unchanged ones: ``item_id``, ``change``."""
    schema = pa.schema([schemas.PLAN.field("item_id"), schemas.PLAN.field("change")])
    kept = [
        batch.filter(pc.not_equal(batch.column("change"), "unchanged"))
        for batch in _column_batches(store, [store.plan_path(run_id)], ["item_id", "change"])
    ]
    return pa.Table.from_batches(kept, schema=schema)


def _manifest_rows(
    store: CheckpointStore, run_id: str, item_ids: pa.Array
) -> dict[str, dict[str, object]]:
    """The run's manifest rows of ``item_ids`` (only those: the manifest lists the corpus)."""
    columns = ["item_id", "uri", "fingerprint", "modality", "metadata_json"]
    rows: dict[str, dict[str, object]] = {}
    for batch in _column_batches(store, [store.manifest_path(run_id)], columns):
        for row in batch.filter(pc.is_in(batch.column("item_id"), value_set=item_ids)).to_pylist():
            rows[row["item_id"]] = row
    return rows


def _embedded_keys(store: CheckpointStore, run_id: str) -> dict[str, list[str]]:
    """The keys this run embedded, by item (only the items it changed have any)."""
    embedded: defaultdict[str, list[str]] = defaultdict(list)
    paths = store.list_files(store.embeddings_dir(run_id))
    for batch in _column_batches(store, paths, ["key", "item_id"]):
        for key, item_id in zip(
            batch.column("key").to_pylist(), batch.column("item_id").to_pylist(), strict=True
        ):
            embedded[item_id].append(key)
    return embedded


def _failure_codes(store: CheckpointStore, run_id: str) -> dict[str, set[str]]:
    """The codes of each item's own failures in this run: those of the plan stage or later. A
    manifest row's failure (:data:`ROW_STAGE`) is a row that never became an item, and the id it
    carries may be another row's: a duplicate's is the id of the row that kept it."""
    codes: defaultdict[str, set[str]] = defaultdict(set)
    paths = store.list_files(store.run_failures_dir(run_id))
    for batch in _column_batches(store, paths, ["item_id", "stage", "code"]):
        for row in batch.to_pylist():
            if row["stage"] != ROW_STAGE:
                codes[row["item_id"]].add(row["code"])
    return codes


@dataclass(frozen=True)
class _RunOutcome:
    """What one run did, read from its checkpoints, for the items it changed."""

    changes: pa.Table
    manifest: dict[str, dict[str, object]]
    embedded: dict[str, list[str]]
    failure_codes: dict[str, set[str]]
    config_hash: str

    def entries(
        self, item_ids: list[str], changes: list[str], previous: pa.Table
    ) -> tuple[set[str], list[dict[str, object]]]:
        """For one partition: the item ids whose rows go (removed or replaced) and the rows that
        replace them. ``previous`` is the partition before this run."""
        drop: set[str] = set()
        rows: list[dict[str, object]] = []
        incomplete = [
            item_id
            for item_id in item_ids
            if self.failure_codes.get(item_id, set()) & RETRIED_NEXT_RUN_CODES
            and self.embedded.get(item_id)
        ]
        held = {}
        if incomplete:
            wanted = previous.filter(pc.is_in(previous["item_id"], value_set=pa.array(incomplete)))
            held = dict(zip(wanted["item_id"].to_pylist(), wanted["keys"].to_pylist(), strict=True))
        for item_id, change in zip(item_ids, changes, strict=True):
            if change == "removed":
                drop.add(item_id)
                continue
            codes = self.failure_codes.get(item_id, set())
            embedded = self.embedded.get(item_id, [])
            if codes & RETRIED_NEXT_RUN_CODES:
                # Transient failures: what it may hold now if this run loaded some of it, else
                # its previous entry stands; either way the next run plans it again.
                if embedded:
                    keys = set(held.get(item_id) or ()) | set(embedded)
                    rows.append(self._row(item_id, keys, "incomplete"))
                    drop.add(item_id)
                continue
            # An item that failed planning is remembered too, with no keys, so that an
            # unchanged corpus is not planned again.
            rows.append(self._row(item_id, embedded, "quarantined" if codes else "complete"))
            drop.add(item_id)
        return drop, rows

    def _row(self, item_id: str, keys: object, status: str) -> dict[str, object]:
        source = self.manifest[item_id]
        return {
            "item_id": item_id,
            "uri": source["uri"],
            "fingerprint": source["fingerprint"],
            "config_hash": self.config_hash,
            "keys": sorted(keys),  # type: ignore[call-overload]
            "modality": source["modality"],
            "metadata_json": source["metadata_json"],
            "status": status,
        }


def committed_run(
    store: CheckpointStore,
    vector_bucket: str,
    index: str,
    run_id: str,
    config_hash: str,
    searchable_text: bool | None = None,
) -> int:
    """Apply run ``run_id``'s outcome to the index's state; returns the items it now holds.

    An item whose units all made it is ``complete``; one that failed through its own fault, in
    planning or in any unit, is ``quarantined`` (left alone until it changes); one with
    transient failures is ``incomplete`` when this run loaded some of its vectors (its keys: all
    it may hold, so a later removal deletes them), else it keeps its previous entry; either way
    the next run plans it again. A removed item leaves the state.

    ``searchable_text`` (None: as it was) records whether the index's vectors now carry their
    searchable text.
    """
    dataset = StateDataset(store, vector_bucket, index)
    layout = dataset.layout()
    record_path = store.state_commit_path(vector_bucket, index)
    if layout.last_run == run_id:  # made visible already: a retry, or a repair after the layout
        store.delete(record_path)
        return layout.items
    changes = _changed_items(store, run_id)
    if searchable_text is not None and searchable_text != layout.searchable_text:
        layout = dataclasses.replace(layout, searchable_text=searchable_text)
        if changes.num_rows == 0:
            dataset.write_layout(layout)
    if changes.num_rows == 0:
        return layout.items
    outcome = _RunOutcome(
        changes=changes,
        manifest=_manifest_rows(store, run_id, changes["item_id"].combine_chunks()),
        embedded=_embedded_keys(store, run_id),
        failure_codes=_failure_codes(store, run_id),
        config_hash=config_hash,
    )
    parts = partitions_of(changes["item_id"], layout.bits)
    touched = sorted(set(parts.tolist()))
    store.write_text(record_path, CommitRecord(run_id, config_hash, tuple(touched)).to_json())
    item_ids = np.asarray(changes["item_id"].to_pylist(), dtype=object)
    kinds = np.asarray(changes["change"].to_pylist(), dtype=object)
    updated: dict[int, PartitionFiles] = {}
    superseded: list[str] = []
    for part in touched:
        in_part = parts == part
        previous = dataset.partition(layout, part)
        drop, rows = outcome.entries(list(item_ids[in_part]), list(kinds[in_part]), previous)
        if not drop:
            continue
        dropped = pc.is_in(previous["item_id"], value_set=pa.array(sorted(drop), pa.string()))
        written = pa.Table.from_pylist(rows, schema=schemas.STATE)
        gone = set(previous["item_id"].filter(dropped).to_pylist()) - {r["item_id"] for r in rows}
        delta = pa.concat_tables([written, removals(sorted(gone))])
        now = pa.concat_tables([previous.filter(pc.invert(dropped)), written])
        updated[part], old_files = dataset.written_partition(layout, part, now, delta, run_id)
        superseded.extend(old_files)
    old_layout = layout
    layout = layout.with_parts(updated, run_id)
    dataset.write_layout(layout)  # the commit is visible from here on
    for name in superseded:
        store.delete(store.state_file_path(vector_bucket, index, old_layout.bits, name))
    if layout.crowded:
        layout = _split(dataset, layout, run_id)
    store.delete(record_path)
    return layout.items


def _split(dataset: StateDataset, layout: StateLayout, run_id: str) -> StateLayout:
    """The state rewritten into more partitions, one old partition at a time: each new
    partition is part of exactly one old one. The new layout is written last; until then
    readers use the old partitions, and an interrupted split is started again from them."""
    store = dataset.store
    split = dataclasses.replace(StateLayout.empty(bits_for(layout.items)),
                                searchable_text=layout.searchable_text)  # fmt: skip
    target = store.state_partitions_dir(dataset.vector_bucket, dataset.index, split.bits)
    store.delete(target)
    updated: dict[int, PartitionFiles] = {}
    for old_part in range(layout.partitions):
        table = dataset.partition(layout, old_part)
        for part, rows in partitioned(table, split.bits):
            updated[part] = dataset.written_partition(split, part, rows, rows, run_id)[0]
    split = split.with_parts(updated, run_id)
    dataset.write_layout(split)
    store.delete(store.state_partitions_dir(dataset.vector_bucket, dataset.index, layout.bits))
    log.info("state of %s split into %d partitions", dataset.index, split.partitions)
    return split


def repaired_state(store: CheckpointStore, vector_bucket: str, index: str) -> str | None:
    """Finish a commit that was interrupted (by a kill, a crash, a lost connection) so the
    state agrees with the index again; returns the run whose commit was finished, or None when
    none was pending."""
    record_path = store.state_commit_path(vector_bucket, index)
    if not store.exists(record_path):
        return None
    record = CommitRecord.from_json(store.read_text(record_path))
    log.warning("finishing run %s's interrupted commit of the index's state", record.run_id)
    committed_run(store, vector_bucket, index, record.run_id, record.config_hash)
    return record.run_id
