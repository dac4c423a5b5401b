"""Rows spilled to local files by the hash of their item id, to be read a bucket at a time.

The same hash the state is partitioned by (:func:`tasks.state.layout.item_hashes`), so a
bucket meets a part of the state, and every row of one item id meets the others in one bucket:
a pass that must see all of an id's rows together (the plan's join with the state and its
duplicate ids, a backfill's repeated ids, a run's item outcomes) reads a bucket at a time, and
its memory follows the size of a bucket, never the size of what was spilled.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.state.layout import grouped, item_hashes

BUCKET_BITS = 8
"""Rows beyond :data:`SPILL_ROWS` are spilled to 256 buckets, whatever the state's partitions:
the spill's memory (:data:`SPILL_ROWS`) stays fixed, and a plan over a hundred million items
reads ~400,000 of them at a time (and joins them with the state one partition at a time)."""

SPILL_ROWS = 256_000
"""Rows the spill holds at most, spread over the buckets, before it writes them."""

HASH = "item_hash"
"""The column of a bucket's rows holding each item id's hash (:func:`item_hashes`), from which
its partition at any number of partitions follows."""


@dataclass(frozen=True)
class SpilledBuckets:
    """Rows spilled into ``2**bits`` buckets under ``directory``, as rows of ``schema`` (the
    rows spilled, and their :data:`HASH`)."""

    directory: str
    bits: int
    schema: pa.Schema

    def path(self, bucket: int) -> str:
        """The file of ``bucket``'s rows (absent when it has none)."""
        return os.path.join(self.directory, f"bucket-{bucket:05d}.arrow")

    def read(self, bucket: int) -> pa.Table:
        """The rows of ``bucket`` in the order they were spilled (an empty table when it has
        none), as ``schema`` has them: the rows spilled and the :data:`HASH` of each item id."""
        path = self.path(bucket)
        if not os.path.exists(path):
            return self.schema.empty_table()
        with pa.OSFile(path) as source:
            return pa.ipc.open_file(source).read_all()


def spilled_buckets(
    batches: Iterable[pa.RecordBatch], directory: str, bits: int, schema: pa.Schema
) -> SpilledBuckets:
    """Write ``batches`` (rows of ``schema``, which has an ``item_id`` column) into
    ``2**bits`` buckets by item-id hash under ``directory``: each bucket an Arrow IPC file of
    its rows in order; or into one bucket (``bits`` 0) when there are at most
    :data:`SPILL_ROWS` rows, which the spill would hold whole anyway. For a corpus that small
    256 small files, and the plan's 256 joins, cost more than the corpus's own work (0.3 s of
    the 0.7 s a plan of an unchanged 20,000-item corpus took).

    Arrow IPC, not Parquet: a scratch file read once, whole. A Parquet writer keeps every row
    group's metadata until its file closes, so with every bucket's file open the spill's memory
    grew with the corpus; an IPC file's footer is a few bytes per batch. The writes are made
    here, in order, not queued to a writer's threads: what the spill holds is at most
    :data:`SPILL_ROWS` rows waiting in their buckets, however slow the disk."""
    spilled = schema.append(pa.field(HASH, pa.uint32(), nullable=False))
    source = iter(batches)
    held: list[pa.RecordBatch] = []
    held_rows = 0
    for batch in source:
        held.append(batch)
        held_rows += batch.num_rows
        if held_rows > SPILL_ROWS:
            return _spilled(chain(held, source), SpilledBuckets(directory, bits, spilled))
    return _spilled(held, SpilledBuckets(directory, 0, spilled))


def _spilled(batches: Iterable[pa.RecordBatch], buckets: SpilledBuckets) -> SpilledBuckets:
    bits = buckets.bits
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    writers: dict[int, pa.ipc.RecordBatchFileWriter] = {}
    waiting: dict[int, list[pa.RecordBatch]] = {}
    waiting_rows: dict[int, int] = {}
    flush_rows = max(1, SPILL_ROWS >> bits)

    def flush(bucket: int) -> None:
        writer = writers.get(bucket)
        if writer is None:
            writer = pa.ipc.new_file(buckets.path(bucket), buckets.schema, options=options)
            writers[bucket] = writer
        writer.write_table(pa.Table.from_batches(waiting.pop(bucket)).combine_chunks())
        waiting_rows.pop(bucket)

    try:
        for batch in batches:
            for bucket, rows in _by_bucket(batch, buckets):
                waiting.setdefault(bucket, []).append(rows)
                waiting_rows[bucket] = waiting_rows.get(bucket, 0) + rows.num_rows
                if waiting_rows[bucket] >= flush_rows:
                    flush(bucket)
        for bucket in list(waiting):
            flush(bucket)
    finally:
        for writer in writers.values():
            writer.close()
    return buckets


def _by_bucket(
    batch: pa.RecordBatch, buckets: SpilledBuckets
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The rows of ``batch`` in each bucket that holds any, in order, with their :data:`HASH`."""
    hashes = item_hashes(batch.column("item_id").to_pylist())
    bucket_of = hashes & np.uint32((1 << buckets.bits) - 1)
    hashed = pa.RecordBatch.from_arrays([*batch.columns, pa.array(hashes)], schema=buckets.schema)
    return grouped(hashed, bucket_of)


def bucket_parts(spill: SpilledBuckets, bits: int) -> Iterator[pa.Table]:
    """The rows of ``spill`` in each of ``2**bits`` buckets (``bits`` no fewer than the
    spill's), in order: a spill of one bucket (it held its rows whole) is read once and cut, so
    that spills of different sizes meet bucket by bucket."""
    if spill.bits == bits:
        yield from (spill.read(bucket) for bucket in range(1 << bits))
        return
    if spill.bits:
        raise ValueError(f"a spill of {spill.bits} bits cannot be cut into {bits}")
    whole = spill.read(0)
    bucket_of = pa.array(whole.column(HASH).to_numpy() & np.uint32((1 << bits) - 1))
    for bucket in range(1 << bits):
        yield whole.filter(pc.equal(bucket_of, bucket))
