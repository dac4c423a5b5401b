"""The corpus of a run, spilled to local Parquet by the same hash the state is partitioned by.

The corpus streams in once, in record batches; pyarrow's dataset writer sorts each batch's rows
into one directory per bucket (``<scratch>/<bucket>/part-*.parquet``), keeping their order. The
plan then reads one bucket at a time beside the matching part of the state, so its memory
follows the size of a bucket, never the size of the corpus.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from tasks import schemas
from tasks.records import Failure, Item
from tasks.state.layout import partitions_of

BUCKET_BITS = 8
"""A corpus is spilled to 256 buckets, whatever the state's partitions: the spill's memory (rows
waiting for a row group, per bucket) stays fixed, and a plan over a hundred million items holds
~400,000 of them at a time."""

BATCH_ROWS = 20_000

_BUCKETED = schemas.MANIFEST.append(pa.field("bucket", pa.int32(), nullable=False))


def corpus_batches(
    entries: Iterable[Item | Failure], failures: list[Failure], batch_rows: int = BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """The items of ``entries`` as record batches of :data:`tasks.schemas.MANIFEST`, in order;
    the failures among them are appended to ``failures``."""
    names = schemas.MANIFEST.names
    rows: list[dict[str, object]] = []
    for entry in entries:
        if isinstance(entry, Failure):
            failures.append(entry)
            continue
        rows.append({name: getattr(entry, name) for name in names})
        if len(rows) >= batch_rows:
            yield pa.RecordBatch.from_pylist(rows, schema=schemas.MANIFEST)
            rows.clear()
    if rows:
        yield pa.RecordBatch.from_pylist(rows, schema=schemas.MANIFEST)


@dataclass(frozen=True)
class CorpusBuckets:
    """A corpus spilled into ``2**bits`` buckets under ``directory``."""

    directory: str
    bits: int

    def read(self, bucket: int) -> pa.Table:
        """The items of ``bucket`` in corpus order (an empty table when it has none)."""
        path = os.path.join(self.directory, str(bucket))
        if not os.path.isdir(path):
            return schemas.MANIFEST.empty_table()
        files = sorted(os.listdir(path), key=lambda name: (len(name), name))
        tables = [pq.read_table(os.path.join(path, name), use_threads=False) for name in files]
        return pa.concat_tables(tables).select(schemas.MANIFEST.names).cast(schemas.MANIFEST)


def spilled_buckets(batches: Iterable[pa.RecordBatch], directory: str, bits: int) -> CorpusBuckets:
    """Write ``batches`` into ``2**bits`` buckets by item-id hash under ``directory``."""

    def bucketed() -> Iterator[pa.RecordBatch]:
        for batch in batches:
            bucket = pa.array(partitions_of(batch.column("item_id"), bits), pa.int32())
            yield pa.RecordBatch.from_arrays([*batch.columns, bucket], schema=_BUCKETED)

    ds.write_dataset(
        pa.RecordBatchReader.from_batches(_BUCKETED, bucketed()),
        directory,
        format="parquet",
        # a scratch file read once, whole: no statistics (their footers grow with the rows
        # while every bucket's file is open) and a fast codec
        file_options=ds.ParquetFileFormat().make_write_options(
            write_statistics=False, compression="lz4"
        ),
        partitioning=ds.partitioning(pa.schema([("bucket", pa.int32())])),
        existing_data_behavior="overwrite_or_ignore",
        max_partitions=1 << bits,
        preserve_order=True,
        use_threads=False,
        # A bucket's rows wait for 1,000 before a row group is written: 256,000 rows held at
        # most, and row groups few enough that the writer's footers stay small.
        min_rows_per_group=1_000,
        max_rows_per_group=64_000,
    )
    return CorpusBuckets(directory, bits)
