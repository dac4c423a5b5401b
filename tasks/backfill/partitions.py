"""Cutting a backfill's source into partitions: one streamed pass over the manifest or the
crawl, its slice and date range applied, each kept row written to the next partition manifest.

    backfills/<backfill_id>/partitions/part-00001.parquet …   (manifests the corpus reader reads)
    backfills/<backfill_id>/rejected.parquet                  (rows no partition takes, why)
    backfills/<backfill_id>/partitions.json                   (the counts; written last)

The same source always gives the same partitions (rows keep source order), and they are cut
once: a resumed backfill finds ``partitions.json`` and reads the same partitions back, even if
the source has changed since. Nothing holds the source whole: the rows selected pass through in
batches of ``BATCH_ROWS`` to a local scratch file, and the ids the manifest gives to buckets of
the id hash (``tasks.plan.buckets``), where a bucket at a time the first row to give an id keeps
it (``tasks.plan.claims``, as in a single run) and the later ones are rejected. The rows are
then read back in order, less the rejected ones, into the partition manifests. What grows with
the source is the list of rejected row numbers, 8 bytes each.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import islice

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import schemas
from tasks.backfill.modified import S3ClientFactory, in_range, modified_time
from tasks.backfill.records import BackfillRecord
from tasks.corpus.manifest import ManifestRow
from tasks.corpus.resolve import crawled_rows, manifest_rows
from tasks.plan.claims import first_claims
from tasks.plan.scratch import plan_scratch
from tasks.records import ROW_STAGE, Failure
from tasks.spill import BUCKET_BITS, SpilledBuckets, spilled_buckets
from tasks.store import CheckpointStore
from tasks.tables import StreamedRecords, failures_table

PARTITION_MANIFEST = pa.schema(
    [
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("id", pa.string()),
        pa.field("modality", pa.string()),
        pa.field("metadata", pa.string()),
        pa.field("encoding", pa.string()),
    ]
)
"""A partition manifest: the source's rows as given (``metadata`` as JSON text; null where the
row gave nothing), and each row's place in the source (``source_row``, 0-based), which the
corpus reader ignores."""

BATCH_ROWS = 1000

ModifiedAt = Callable[[ManifestRow], datetime | None]


@dataclass(frozen=True)
class PartitionSet:
    """How a backfill's source was cut. ``rows_read``: rows of the source read (the reading
    stops at the slice's end); ``rows_selected``: those in the slice. Each selected row is in
    exactly one of ``rows_outside_dates`` (outside the date range), ``rows_rejected`` (a
    malformed row, or an id an earlier row has; see ``rejected.parquet``) and
    ``rows_partitioned`` (in a partition manifest); ``rows_undated`` of the partitioned rows
    had no readable modification time and were kept, for their run to say why. ``partitions``
    manifests hold ``partition_size`` rows each, the last one the rest."""

    partitions: int
    partition_size: int
    rows_read: int
    rows_selected: int
    rows_outside_dates: int
    rows_rejected: int
    rows_partitioned: int
    rows_undated: int

    @property
    def adds_up(self) -> bool:
        """Every selected row is outside the dates, rejected or in a partition."""
        return self.rows_selected == (
            self.rows_outside_dates + self.rows_rejected + self.rows_partitioned
        )

    def to_json(self) -> str:
        """The counts as ``partitions.json`` holds them."""
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> PartitionSet:
        """The counts ``to_json`` wrote."""
        return cls(**json.loads(text))


@dataclass
class _Tally:
    rows_read: int = 0
    rows_selected: int = 0
    rows_outside_dates: int = 0
    rows_undated: int = 0


def partitioned_source(
    store: CheckpointStore, record: BackfillRecord, s3: S3ClientFactory
) -> PartitionSet:
    """The backfill's partitions: read back when they were cut before, else cut now from its
    source. ``s3`` makes the S3 client for an S3 crawl and for S3 modification times."""
    path = store.partition_set_path(record.backfill_id)
    if store.exists(path):
        return PartitionSet.from_json(store.read_text(path))
    tally = _Tally()
    with (
        store.table_writer(
            store.backfill_rejected_path(record.backfill_id), schemas.FAILURES
        ) as rejected,
        plan_scratch() as scratch,
    ):
        rejections = StreamedRecords(rejected, failures_table, BATCH_ROWS)

        def modified_at(row: ManifestRow) -> datetime | None:
            return modified_time(row, record.root, s3)

        dated = any(moment is not None for moment in record.modified_range)
        selected = selected_rows(
            source_rows(record, s3),
            record.row_start,
            record.row_stop,
            record.modified_range,
            modified_at if dated else None,
            tally,
            rejections.add,
        )
        candidates = os.path.join(scratch, "selected.arrow")
        claims = spilled_buckets(_spilled_rows(selected, candidates), scratch, BUCKET_BITS, _CLAIMS)
        repeated = _repeated_rows(claims, rejections.add_table)
        rejections.flush()
        count, written = write_partitions(
            store, record.backfill_id, _kept_batches(candidates, repeated), record.partition_size
        )
    partitions = PartitionSet(
        partitions=count,
        partition_size=record.partition_size,
        rows_read=tally.rows_read,
        rows_selected=tally.rows_selected,
        rows_outside_dates=tally.rows_outside_dates,
        rows_rejected=rejections.count,
        rows_partitioned=written,
        rows_undated=tally.rows_undated,
    )
    # Written last: its presence means every partition manifest is on disk.
    store.write_text(path, partitions.to_json())
    return partitions


def source_rows(record: BackfillRecord, s3: S3ClientFactory) -> Iterator[ManifestRow | Failure]:
    """The rows of the backfill's source, in source order: its manifest's, or its crawl's."""
    if record.manifest is not None:
        return manifest_rows(record.manifest)
    assert record.corpus is not None
    client = s3() if record.corpus[:5].lower() == "s3://" else None
    return crawled_rows(record.corpus, client)


def selected_rows(
    rows: Iterable[ManifestRow | Failure],
    row_start: int,
    row_stop: int | None,
    modified_range: tuple[datetime | None, datetime | None],
    modified_at: ModifiedAt | None,
    tally: _Tally,
    reject: Callable[[Failure], None],
) -> Iterator[tuple[int, ManifestRow]]:
    """``(source row, row)`` for each row of ``rows[row_start:row_stop]`` that is in the date
    range (when ``modified_at`` tells times); the others are counted in ``tally``, and
    malformed rows go to ``reject``. Lazy, and reads no row past ``row_stop``. Rows that repeat
    an earlier row's id are among those yielded (see the module's notes)."""
    after, before = modified_range
    for number, row in _sliced(rows, row_start, row_stop, tally):
        tally.rows_selected += 1
        if isinstance(row, Failure):
            reject(row)
            continue
        if modified_at is not None:
            moment = modified_at(row)
            if not in_range(moment, after, before):
                tally.rows_outside_dates += 1
                continue
            tally.rows_undated += moment is None
        yield number, row


def _sliced(
    rows: Iterable[ManifestRow | Failure], start: int, stop: int | None, tally: _Tally
) -> Iterator[tuple[int, ManifestRow | Failure]]:
    """``rows[start:stop]`` with their numbers; counts every row read, and reads none past
    ``stop``."""
    remaining = iter(rows)
    number = 0
    while stop is None or number < stop:
        row = next(remaining, None)
        if row is None:
            return
        tally.rows_read += 1
        if number >= start:
            yield number, row
        number += 1


_CLAIMS = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("source_row", pa.int64(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
    ]
)
"""The rows that give an id, as spilled by the id's hash."""


def _spilled_rows(rows: Iterable[tuple[int, ManifestRow]], path: str) -> Iterator[pa.RecordBatch]:
    """Write ``rows`` to ``path`` (an Arrow IPC file of :data:`PARTITION_MANIFEST` batches, in
    order) and yield the claims (:data:`_CLAIMS`) of those that give an id."""
    remaining = iter(rows)
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with pa.ipc.new_file(path, PARTITION_MANIFEST, options=options) as selected:
        while batch := list(islice(remaining, BATCH_ROWS)):
            records = [_manifest_record(number, row) for number, row in batch]
            table = pa.Table.from_pylist(records, schema=PARTITION_MANIFEST)
            selected.write_table(table)
            given = table.filter(pc.is_valid(table["id"])).combine_chunks()
            if given.num_rows:
                columns = [given[name].chunk(0) for name in ("id", "source_row", "uri")]
                yield pa.RecordBatch.from_arrays(columns, schema=_CLAIMS)


def _repeated_rows(claims: SpilledBuckets, rejected: Callable[[pa.Table], object]) -> np.ndarray:
    """The source rows, in order, that give an id an earlier row gave, each of which goes to
    ``rejected`` as a ``duplicate_id`` row, a bucket of the id hash at a time."""
    repeated: list[np.ndarray] = []
    for bucket in range(1 << claims.bits):
        table = claims.read(bucket)
        if not table.num_rows:
            continue
        keeps, first = first_claims(table, "source_row")
        later = pc.invert(keeps)
        rows, firsts = table.filter(later), first.filter(later)
        if not rows.num_rows:
            continue
        rejected(
            failures_table(
                _duplicate(item_id, uri, number, earliest)
                for item_id, uri, number, earliest in zip(
                    rows["item_id"].to_pylist(),
                    rows["uri"].to_pylist(),
                    rows["source_row"].to_pylist(),
                    firsts.to_pylist(),
                    strict=True,
                )
            )
        )
        repeated.append(rows["source_row"].to_numpy())
    return np.sort(np.concatenate(repeated)) if repeated else np.empty(0, np.int64)


def _kept_batches(path: str, repeated: np.ndarray) -> Iterator[pa.RecordBatch]:
    """The rows of the Arrow IPC file at ``path``, in order, less the source rows in
    ``repeated`` (sorted)."""
    with pa.memory_map(path) as source:
        selected = pa.ipc.open_file(source)
        for index in range(selected.num_record_batches):
            batch = selected.get_batch(index)
            if len(repeated) == 0:
                yield batch
                continue
            numbers = batch.column("source_row").to_numpy()
            # Binary search in the sorted row numbers: a batch costs its own size times log,
            # however many rows were rejected.
            at = np.searchsorted(repeated, numbers).clip(max=len(repeated) - 1)
            dropped = repeated[at] == numbers
            yield batch.filter(pa.array(~dropped)) if dropped.any() else batch


def write_partitions(
    store: CheckpointStore,
    backfill_id: str,
    batches: Iterable[pa.RecordBatch],
    partition_size: int,
) -> tuple[int, int]:
    """Write the rows of ``batches`` (:data:`PARTITION_MANIFEST`) to partition manifests of
    ``partition_size`` rows each, in order, each file atomically; returns how many manifests
    (none for no rows) and rows were written."""
    partitions = written = room = 0
    with ExitStack() as open_partition:
        writer: pq.ParquetWriter | None = None
        for batch in batches:
            while batch.num_rows:
                if writer is None or room == 0:
                    open_partition.close()  # the partition before is complete: it appears
                    partitions += 1
                    path = store.partition_manifest_path(backfill_id, partitions)
                    writer = open_partition.enter_context(
                        store.table_writer(path, PARTITION_MANIFEST)
                    )
                    room = partition_size
                part = batch.slice(0, room)
                writer.write_batch(part)
                written += part.num_rows
                room -= part.num_rows
                batch = batch.slice(part.num_rows)
    return partitions, written


def partition_rows(store: CheckpointStore, backfill_id: str, partition: int) -> int:
    """How many rows a partition manifest holds (read from its footer)."""
    path = store.partition_manifest_path(backfill_id, partition)
    return pq.ParquetFile(path, filesystem=store.filesystem).metadata.num_rows


def _manifest_record(number: int, row: ManifestRow) -> dict[str, object]:
    return {
        "source_row": number,
        "uri": row.uri,
        "id": row.item_id,
        "modality": row.modality,
        "metadata": row.metadata_json,
        "encoding": row.encoding,
    }


def _duplicate(item_id: str, uri: str, number: int, first: int) -> Failure:
    return Failure(
        item_id=item_id,
        uri=uri,
        stage=ROW_STAGE,
        code="duplicate_id",
        message=(
            f"row {number} of the source: id {item_id!r} is already used by row {first}; "
            "ids must be unique"
        ),
    )
