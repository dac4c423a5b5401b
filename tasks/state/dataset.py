"""The state's partitions: read one at a time, changed one at a time, made visible together.

``state/<bucket>/<index>/items-<bits>/`` holds each partition's files: a base
(``part-<p>.<run>.parquet``, sorted by item id) and the deltas of later commits
(``part-<p>.<run>.delta.parquet``: the rows a run wrote, and a row of status ``removed`` for
each item it removed), all in the :data:`tasks.schemas.STATE` schema. ``layout.json`` lists
the files of every partition; writing it is what makes a commit visible, so a commit
interrupted before it is invisible, and files it does not list are never read. A commit writes
a delta for each partition it touched (bytes in proportion to the change) and folds a
partition's deltas into a new base once they hold a quarter of its rows or number
:data:`MAX_DELTAS` (the amortised cost of keeping reads fast).

Any Parquet reader reads a partition's files; the current state is the last row of each item
across the files the layout lists, in order, without the ``removed`` ones.

A state that novaflow wrote as one file (``state.parquet``) is migrated on first use: its rows
are written into partitions, then the layout, then the old file is removed, so a migration
interrupted half-way is simply done again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import schemas
from tasks.state.layout import PartitionFiles, StateLayout, bits_for, grouped, partitions_of
from tasks.store import CheckpointStore

log = logging.getLogger(__name__)

RUN_ID_METADATA = b"novaflow.run_id"
ROW_GROUP_ROWS = 65_536
REMOVED_STATUS = "removed"
"""The status of a delta row recording an item's removal (never in a partition's items)."""
MAX_DELTAS = 8
"""A partition with more delta files than this is folded into a new base at its next change."""
_MIN_FOLDED_ROWS = 64
_CACHED_PARTITIONS = 8


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

    @classmethod
    def from_row(cls, row: dict[str, object]) -> StateEntry:
        """The entry of one row of a state table."""
        return cls(**{**row, "keys": tuple(row["keys"])})  # type: ignore[arg-type]


def entries_table(entries: Iterable[StateEntry]) -> pa.Table:
    """``entries`` as a state table (:data:`tasks.schemas.STATE`), in the order given."""
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
        for entry in entries
    ]
    return pa.Table.from_pylist(rows, schema=schemas.STATE)


def held_modalities_of(table: pa.Table) -> tuple[str, ...]:
    """The modalities of a state table's items that hold at least one vector, sorted."""
    holding = table.filter(pc.greater(pc.list_value_length(table["keys"]), 0))
    return tuple(sorted(pc.unique(holding["modality"]).to_pylist()))


class StateDataset:
    """One index's state in a checkpoint store."""

    def __init__(self, store: CheckpointStore, vector_bucket: str, index: str) -> None:
        self.store = store
        self.vector_bucket = vector_bucket
        self.index = index

    # -- layout ----------------------------------------------------------------------------------

    def layout(self) -> StateLayout:
        """The state's layout now (an empty one-partition layout before the first commit),
        migrating a single-file state first."""
        path = self.store.state_layout_path(self.vector_bucket, self.index)
        if self.store.exists(path):
            return StateLayout.from_json(self.store.read_text(path))
        legacy = self.store.legacy_state_path(self.vector_bucket, self.index)
        if self.store.exists(legacy):
            return self._migrated(legacy)
        return StateLayout.empty()

    def write_layout(self, layout: StateLayout) -> None:
        """Record ``layout`` (atomically): what makes the files it lists the state."""
        path = self.store.state_layout_path(self.vector_bucket, self.index)
        self.store.write_text(path, layout.to_json())

    def _migrated(self, legacy: str) -> StateLayout:
        # A state of the single-file era was read whole by the novaflow that wrote it, so it
        # fits in memory here too.
        table = self.store.read_table(legacy, schemas.STATE)
        log.info("migrating %s (%d items) to a partitioned state", legacy, table.num_rows)
        layout = self.replaced(table, run_id="migration")
        self.store.delete(legacy)
        return layout

    # -- partitions ------------------------------------------------------------------------------

    def _file_path(self, layout: StateLayout, name: str) -> str:
        return self.store.state_file_path(self.vector_bucket, self.index, layout.bits, name)

    def partition(self, layout: StateLayout, part: int) -> pa.Table:
        """The items of partition ``part`` now, sorted by item id (empty when it holds none)."""
        files = layout.parts[part].files
        tables = [
            self.store.read_table(self._file_path(layout, name), schemas.STATE, use_threads=False)
            for name in files
        ]
        if not tables:
            return schemas.STATE.empty_table()
        if len(tables) == 1:
            return tables[0].replace_schema_metadata(None)
        return _latest_rows(tables)

    def written_partition(
        self, layout: StateLayout, part: int, now: pa.Table, delta: pa.Table, run_id: str
    ) -> tuple[PartitionFiles, tuple[str, ...]]:
        """Write run ``run_id``'s change to partition ``part``: ``delta`` (its rows and
        removals) as a new delta file, or, when the deltas have grown, ``now`` (the partition
        with the change applied) as its new base. Returns the partition as the next layout
        lists it, and the files that layout no longer needs."""
        previous = layout.parts[part]
        delta_rows = previous.delta_rows + delta.num_rows
        base_rows = previous.items - previous.delta_rows
        folded = (
            not previous.files
            or len(previous.files) > MAX_DELTAS
            or delta_rows * 4 > max(base_rows, _MIN_FOLDED_ROWS)
        )
        modalities = held_modalities_of(now)
        if folded:
            name = f"part-{part:05d}.{run_id}.parquet"
            self._write(layout, name, now.sort_by("item_id"), run_id)
            superseded = tuple(file for file in previous.files if file != name)
            return PartitionFiles((name,), now.num_rows, 0, modalities), superseded
        name = f"part-{part:05d}.{run_id}.delta.parquet"
        self._write(layout, name, delta, run_id)
        files = (*(file for file in previous.files if file != name), name)
        return PartitionFiles(files, now.num_rows, delta_rows, modalities), ()

    def _write(self, layout: StateLayout, name: str, table: pa.Table, run_id: str) -> None:
        stamped = table.cast(schemas.STATE).replace_schema_metadata(
            {RUN_ID_METADATA: run_id.encode()}
        )
        self.store.write_table(
            self._file_path(layout, name), stamped, row_group_rows=ROW_GROUP_ROWS
        )

    def batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Every item of the state, partition by partition, as record batches of ``columns``."""
        layout = self.layout()
        for part in range(layout.partitions):
            if layout.parts[part].items:
                table = self.partition(layout, part)
                yield from table.select(columns or schemas.STATE.names).to_batches()

    def replaced(self, table: pa.Table, run_id: str, bits: int | None = None) -> StateLayout:
        """Replace the whole state with ``table`` (for migrations and tests), in ``2**bits``
        partitions (as many as its size needs by default); returns the new layout. The
        partitions first, the layout last."""
        layout = StateLayout.empty(bits_for(table.num_rows) if bits is None else bits)
        updated = {
            part: self.written_partition(layout, part, rows, rows, run_id)[0]
            for part, rows in partitioned(table, layout.bits)
        }
        layout = layout.with_parts(updated, run_id)
        self.write_layout(layout)
        return layout

    def lookup(self) -> StateLookup:
        """A reader of single entries that keeps the last few partitions it read."""
        return StateLookup(self)


def partitioned(table: pa.Table, bits: int) -> Iterator[tuple[int, pa.Table]]:
    """The rows of ``table`` in each partition at ``2**bits`` that holds any, in order."""
    return grouped(table, partitions_of(table["item_id"], bits))


def _latest_rows(tables: list[pa.Table]) -> pa.Table:
    """The last row of each item across ``tables`` (a base, then deltas, in commit order),
    without removed items, sorted by item id."""
    rows = pa.concat_tables([table.replace_schema_metadata(None) for table in tables])
    rows = rows.append_column("_order", pa.array(np.arange(rows.num_rows)))
    latest = rows.group_by("item_id", use_threads=False).aggregate([("_order", "max")])
    current = rows.take(latest["_order_max"]).drop_columns(["_order"])
    current = current.filter(pc.not_equal(current["status"], REMOVED_STATUS))
    return current.sort_by("item_id")


def removals(item_ids: list[str]) -> pa.Table:
    """Delta rows recording that ``item_ids`` left the state."""
    count = len(item_ids)
    empty = pa.array([""] * count, pa.string())
    return pa.table(
        {
            "item_id": pa.array(item_ids, pa.string()),
            "uri": empty,
            "fingerprint": empty,
            "config_hash": empty,
            "keys": pa.array([[]] * count, pa.list_(pa.string())),
            "modality": empty,
            "metadata_json": empty,
            "status": pa.array([REMOVED_STATUS] * count, pa.string()),
        },
        schema=schemas.STATE,
    )


class StateLookup:
    """Entries by item id, read partition by partition, the last few partitions cached: for
    callers that ask about a few items (evaluation's judged items, async jobs' items)."""

    def __init__(self, dataset: StateDataset) -> None:
        self._dataset = dataset
        self._layout = dataset.layout()
        self._partitions: OrderedDict[int, dict[str, StateEntry]] = OrderedDict()

    def get(self, item_id: str) -> StateEntry | None:
        """The entry of ``item_id``, or None when the state does not hold it."""
        (part,) = partitions_of(pa.array([item_id]), self._layout.bits)
        entries = self._partitions.get(int(part))
        if entries is None:
            table = self._dataset.partition(self._layout, int(part))
            entries = {row["item_id"]: StateEntry.from_row(row) for row in table.to_pylist()}
            self._partitions[int(part)] = entries
            if len(self._partitions) > _CACHED_PARTITIONS:
                self._partitions.popitem(last=False)
        else:
            self._partitions.move_to_end(int(part))
        return entries.get(item_id)
