"""Cutting a backfill's source into partitions: one streamed pass over the manifest or the
crawl, its slice and date range applied, each kept row written to the next partition manifest.

    backfills/<backfill_id>/partitions/part-00001.parquet …   (manifests the corpus reader reads)
    backfills/<backfill_id>/rejected.parquet                  (rows no partition takes, why)
    backfills/<backfill_id>/partitions.json                   (the counts; written last)

The same source always gives the same partitions (rows keep source order), and they are cut
once: a resumed backfill finds ``partitions.json`` and reads the same partitions back, even if
the source has changed since. Nothing holds the source whole: rows pass through in batches of
``batch_rows``; the only state that grows is the set of ids the manifest gives, which keeps a
duplicate id out of a later partition (the first row keeps the id, as in a single run).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from itertools import chain, islice

import pyarrow as pa
import pyarrow.parquet as pq

from tasks import schemas
from tasks.backfill.modified import S3ClientFactory, in_range, modified_time
from tasks.backfill.records import BackfillRecord
from tasks.corpus.manifest import ManifestRow
from tasks.corpus.resolve import crawled_rows, manifest_rows
from tasks.records import ROW_STAGE, Failure
from tasks.store import CheckpointStore
from tasks.tables import failures_table

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
    rows_rejected: int = 0
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
    with store.table_writer(
        store.backfill_rejected_path(record.backfill_id), schemas.FAILURES
    ) as rejected:
        rejections: list[Failure] = []

        def reject(failure: Failure) -> None:
            tally.rows_rejected += 1
            rejections.append(failure)
            if len(rejections) >= BATCH_ROWS:
                rejected.write_table(failures_table(rejections))
                rejections.clear()

        def modified_at(row: ManifestRow) -> datetime | None:
            return modified_time(row, record.root, s3)

        dated = any(moment is not None for moment in record.modified_range)
        kept = selected_rows(
            source_rows(record, s3),
            record.row_start,
            record.row_stop,
            record.modified_range,
            modified_at if dated else None,
            tally,
            reject,
        )
        count, written = write_partitions(store, record.backfill_id, kept, record.partition_size)
        if rejections:
            rejected.write_table(failures_table(rejections))
    partitions = PartitionSet(
        partitions=count,
        partition_size=record.partition_size,
        rows_read=tally.rows_read,
        rows_selected=tally.rows_selected,
        rows_outside_dates=tally.rows_outside_dates,
        rows_rejected=tally.rows_rejected,
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
    range (when ``modified_at`` tells times) and whose id no earlier kept row has; the others
    are counted in ``tally``, and malformed rows and duplicate ids go to ``reject``. Lazy, and
    reads no row past ``row_stop``."""
    first_row_of_id: dict[str, int] = {}
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
        if row.item_id:
            first = first_row_of_id.setdefault(row.item_id, number)
            if first != number:
                reject(_duplicate(row, number, first))
                continue
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


def write_partitions(
    store: CheckpointStore,
    backfill_id: str,
    rows: Iterable[tuple[int, ManifestRow]],
    partition_size: int,
    batch_rows: int = BATCH_ROWS,
) -> tuple[int, int]:
    """Write ``rows`` to partition manifests of ``partition_size`` rows each, in order, each
    file atomically; returns how many manifests (none for no rows) and rows were written."""
    remaining = iter(rows)
    partitions = written = 0
    while (first := next(remaining, None)) is not None:
        partitions += 1
        path = store.partition_manifest_path(backfill_id, partitions)
        members = chain([first], islice(remaining, partition_size - 1))
        with store.table_writer(path, PARTITION_MANIFEST) as writer:
            while batch := list(islice(members, batch_rows)):
                records = [_manifest_record(number, row) for number, row in batch]
                writer.write_table(pa.Table.from_pylist(records, schema=PARTITION_MANIFEST))
                written += len(records)
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


def _duplicate(row: ManifestRow, number: int, first: int) -> Failure:
    return Failure(
        item_id=row.item_id or "",
        uri=row.uri,
        stage=ROW_STAGE,
        code="duplicate_id",
        message=(
            f"row {number} of the source: id {row.item_id!r} is already used by row {first}; "
            "ids must be unique"
        ),
    )
