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
and manifest), read as Arrow and kept only for the items it changed (one row per item), then
sorted by partition and applied one partition at a time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tasks import schemas
from tasks.records import ROW_STAGE
from tasks.service_errors import RETRIED_NEXT_RUN_CODES
from tasks.state.dataset import StateDataset, partitioned, removals
from tasks.state.layout import PartitionFiles, StateLayout, bits_for
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
        yield from store.batches(path, columns)


def _filtered(
    store: CheckpointStore,
    paths: list[str],
    schema: pa.Schema,
    keep: Callable[[pa.RecordBatch], pa.Array],
) -> pa.Table:
    """The rows of the Parquet files at ``paths`` that ``keep`` selects, streamed batch by
    batch, as a table of ``schema``'s columns."""
    batches = _column_batches(store, paths, schema.names)
    kept = [batch.filter(keep(batch)).cast(schema) for batch in batches]
    return pa.Table.from_batches(kept, schema=schema)


def _changed_items(store: CheckpointStore, run_id: str) -> pa.Table:
    """The plan's items other than the unchanged ones: ``item_id``, ``change``."""
    schema = pa.schema([schemas.PLAN.field("item_id"), schemas.PLAN.field("change")])
    return _filtered(
        store,
        [store.plan_path(run_id)],
        schema,
        lambda batch: pc.not_equal(batch.column("change"), "unchanged"),
    )


def _run_outcome(store: CheckpointStore, run_id: str, changes: pa.Table) -> pa.Table:
    """One row per item of ``changes``, in their order: ``item_id``, ``change``; the run's
    manifest row (``uri``,
    ``fingerprint``, ``modality``, ``metadata_json``; null for a removed item); ``keys``, the
    keys the run embedded for it, sorted; ``failed``, whether the run recorded a failure of the
    item (stage ``plan`` or later); ``transient``, whether one of those is retried by the next
    run. Read from the run's checkpoints in Arrow, batch by batch, keeping only the rows of the
    changed items.

    Only the plan and later stages count as an item's failures: a manifest row's failure
    (:data:`ROW_STAGE`) is a row that never became an item, and the id it carries may be
    another row's (a duplicate's is the id of the row that kept it)."""
    ids = changes["item_id"]
    columns = ["item_id", "uri", "fingerprint", "modality", "metadata_json"]
    manifest = _filtered(
        store,
        [store.manifest_path(run_id)],
        pa.schema([schemas.MANIFEST.field(name) for name in columns]),
        lambda batch: pc.is_in(batch.column("item_id"), value_set=ids),
    )
    described = manifest.take(pc.index_in(ids, value_set=manifest["item_id"]))
    del manifest  # the rows, now in item order, are all the outcome needs of it
    embedded = _filtered(
        store,
        store.list_files(store.embeddings_dir(run_id)),
        pa.schema([pa.field("item_id", pa.string()), pa.field("key", pa.string())]),
        lambda batch: pc.is_in(batch.column("item_id"), value_set=ids),
    )
    # use_threads=False: groups and their lists keep the (sorted) input order
    keys = (
        embedded.sort_by([("item_id", "ascending"), ("key", "ascending")])
        .group_by("item_id", use_threads=False)
        .aggregate([("key", "list")])
    )
    held_keys = keys["key_list"].take(pc.index_in(ids, value_set=keys["item_id"]))
    del embedded, keys
    failures = _filtered(
        store,
        store.list_files(store.run_failures_dir(run_id)),
        pa.schema([pa.field(name, pa.string()) for name in ("item_id", "stage", "code")]),
        lambda batch: pc.not_equal(batch.column("stage"), ROW_STAGE),
    )
    retried = pa.array(sorted(RETRIED_NEXT_RUN_CODES), pa.string())
    transient = failures.filter(pc.is_in(failures["code"], value_set=retried))
    return pa.table(
        {
            "item_id": ids,
            "change": changes["change"],
            **{name: described[name] for name in columns[1:]},
            "keys": pc.fill_null(held_keys, pa.scalar([], pa.list_(pa.string()))),
            "failed": pc.is_in(ids, value_set=failures["item_id"]),
            "transient": pc.is_in(ids, value_set=transient["item_id"]),
        }
    )


def _applied(
    rows: pa.Table, previous: pa.Table, config_hash: str
) -> tuple[pa.Table, pa.Table] | None:
    """One partition after the run: the partition (``previous``) with the run's outcome
    (``rows``, see :func:`_run_outcome`) applied, and the delta that records the change (the
    rows written, and a removal for each item that left); None when the partition is as it
    was (only transient failures that loaded nothing, whose previous entries stand)."""
    removed = pc.equal(rows["change"], "removed")
    loaded = pc.greater(pc.list_value_length(rows["keys"]), 0)
    # Transient failures: what it may hold now if this run loaded some of it, else its
    # previous entry stands; either way the next run plans it again. An item that failed
    # planning is remembered too, with no keys, so that an unchanged corpus is not planned
    # again.
    kept = rows.filter(pc.and_(pc.invert(removed), pc.or_(pc.invert(rows["transient"]), loaded)))
    if kept.num_rows == 0 and not pc.any(removed).as_py():
        return None
    status = pc.if_else(
        kept["transient"],
        "incomplete",
        pc.if_else(kept["failed"], "quarantined", "complete"),
    )
    written = pa.table(
        {
            "item_id": kept["item_id"],
            "uri": kept["uri"],
            "fingerprint": kept["fingerprint"],
            "config_hash": pa.array([config_hash] * kept.num_rows, pa.string()),
            "keys": _with_held_keys(kept, previous),
            "modality": kept["modality"],
            "metadata_json": kept["metadata_json"],
            "status": status,
        }
    ).cast(schemas.STATE)
    drop = pa.concat_arrays(
        [rows["item_id"].filter(removed).combine_chunks(), written["item_id"].combine_chunks()]
    )
    dropped = pc.is_in(previous["item_id"], value_set=drop)
    gone = previous["item_id"].filter(dropped)
    gone = gone.filter(pc.invert(pc.is_in(gone, value_set=written["item_id"])))
    delta = pa.concat_tables([written, removals(sorted(gone.to_pylist()))])
    now = pa.concat_tables([previous.filter(pc.invert(dropped)), written])
    return now, delta


def _with_held_keys(kept: pa.Table, previous: pa.Table) -> pa.ChunkedArray:
    """The keys of ``kept``'s items; an incomplete one's are all it may hold: its previous
    keys and the ones this run loaded, sorted, once each."""
    if not pc.any(kept["transient"]).as_py():
        return kept["keys"]
    keys = kept["keys"].to_pylist()
    held = previous["keys"].take(pc.index_in(kept["item_id"], value_set=previous["item_id"]))
    flags = kept["transient"].to_pylist()
    for index in (i for i, transient in enumerate(flags) if transient):
        keys[index] = sorted(set(held[index].as_py() or ()) | set(keys[index]))
    return pa.chunked_array([pa.array(keys, pa.list_(pa.string()))])


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
    if not any(part.files for part in layout.parts):
        # The index's first commit (or one after every item left and its files went): laid
        # out at once for the items it brings, instead of written into one partition and then
        # read back and rewritten by a split (a fifth of the commit's memory at 20,000 items).
        layout = dataclasses.replace(
            StateLayout.empty(bits_for(changes.num_rows)),
            last_run=layout.last_run,
            searchable_text=layout.searchable_text,
        )
    # What earlier stages freed stays with Arrow's allocator unless handed back.
    pa.default_memory_pool().release_unused()
    # Slices of one copy of the outcome sorted by partition: the unsorted one can go.
    by_partition = list(partitioned(_run_outcome(store, run_id, changes), layout.bits))
    touched = [part for part, _ in by_partition]
    store.write_text(record_path, CommitRecord(run_id, config_hash, tuple(touched)).to_json())
    updated: dict[int, PartitionFiles] = {}
    superseded: list[str] = []
    for part, rows in by_partition:
        previous = dataset.partition(layout, part)
        applied = _applied(rows, previous, config_hash)
        if applied is None:
            continue
        now, delta = applied
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
