"""The corpus of a run, spilled to local files by the same hash the state is partitioned by.

The corpus streams in once, in record batches; each batch's rows are sorted into one file per
bucket (``<scratch>/bucket-<bucket>.arrow``), keeping their order. The plan then reads one
bucket at a time beside the matching part of the state, so its memory follows the size of a
bucket, never the size of the corpus. Every row that claims an item id is spilled (the items,
and the rows that failed after claiming theirs), so that all the claims on an id meet in one
bucket, where ``tasks.plan.claims`` tells which row keeps it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa

from tasks import schemas
from tasks.records import Failure, Item
from tasks.state.layout import grouped, item_hashes

BUCKET_BITS = 8
"""A corpus larger than :data:`SPILL_ROWS` is spilled to 256 buckets, whatever the state's
partitions: the spill's memory (:data:`SPILL_ROWS`) stays fixed, and a plan over a hundred
million items reads ~400,000 of them at a time (and joins them with the state one partition at
a time)."""

BATCH_ROWS = 20_000

SPILL_ROWS = 256_000
"""Rows the spill holds at most, spread over the buckets, before it writes them."""

HASH = "item_hash"
"""The column of a bucket's rows holding each item id's hash (:func:`item_hashes`), from which
its partition at any number of partitions follows."""

POSITION = "position"
"""The manifest row of a claim (:attr:`Item.position`, :attr:`Failure.claimed_at`)."""

CLAIM_CODE = "claim_code"
CLAIM_MESSAGE = "claim_message"
"""A claim that is a failed row: its code and message (null for an item)."""

CLAIMS = schemas.MANIFEST.append(pa.field(POSITION, pa.int64(), nullable=False))
CLAIMS = CLAIMS.append(pa.field(CLAIM_CODE, pa.string())).append(
    pa.field(CLAIM_MESSAGE, pa.string())
)
"""The rows that claim an item id: an item's manifest row, or a failed row's ``item_id`` and
``uri`` with empty manifest fields, and where it claimed the id."""

_SPILLED = CLAIMS.append(pa.field(HASH, pa.uint32(), nullable=False))
_FAILED_ROW = {"modality": "", "fingerprint": "", "size_bytes": 0, "metadata_json": "{}"}


def corpus_batches(
    entries: Iterable[Item | Failure],
    on_failure: Callable[[Failure], object],
    batch_rows: int = BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """The claims among ``entries`` (items, and failures with ``claimed_at``) as record
    batches of :data:`CLAIMS`, in order; every other failure goes to ``on_failure`` as it
    comes. An item that came from no manifest row (``position`` 0) claims at its place among
    ``entries``."""
    names = schemas.MANIFEST.names
    columns: list[list[object]] = [[] for _ in CLAIMS.names]
    for place, entry in enumerate(entries, start=1):
        if isinstance(entry, Failure):
            if not entry.claimed_at:
                on_failure(entry)
                continue
            values = [_FAILED_ROW.get(name, getattr(entry, name, None)) for name in names]
            values += [entry.claimed_at, entry.code, entry.message]
        else:
            values = [getattr(entry, name) for name in names]
            values += [entry.position or place, None, None]
        for column, value in zip(columns, values, strict=True):
            column.append(value)
        if len(columns[0]) >= batch_rows:
            yield _batch(columns)
            columns = [[] for _ in CLAIMS.names]
    if columns[0]:
        yield _batch(columns)


def _batch(columns: list[list[object]]) -> pa.RecordBatch:
    arrays = [pa.array(values, field.type) for values, field in zip(columns, CLAIMS, strict=True)]
    return pa.RecordBatch.from_arrays(arrays, schema=CLAIMS)


@dataclass(frozen=True)
class CorpusBuckets:
    """A corpus spilled into ``2**bits`` buckets under ``directory``, as rows of ``schema``
    (the rows spilled, and their :data:`HASH`)."""

    directory: str
    bits: int
    schema: pa.Schema = _SPILLED

    def path(self, bucket: int) -> str:
        """The file of ``bucket``'s items (absent when it has none)."""
        return os.path.join(self.directory, f"bucket-{bucket:05d}.arrow")

    def read(self, bucket: int) -> pa.Table:
        """The rows of ``bucket`` in corpus order (an empty table when it has none), as
        ``schema`` has them: the rows spilled (the corpus's :data:`CLAIMS`, by default) and the
        :data:`HASH` of each item id."""
        path = self.path(bucket)
        if not os.path.exists(path):
            return self.schema.empty_table()
        with pa.OSFile(path) as source:
            return pa.ipc.open_file(source).read_all()


def spilled_buckets(
    batches: Iterable[pa.RecordBatch], directory: str, bits: int, schema: pa.Schema = CLAIMS
) -> CorpusBuckets:
    """Write ``batches`` (rows of ``schema``, with an ``item_id`` column: by default the
    corpus's :data:`CLAIMS`) into ``2**bits`` buckets by item-id hash under ``directory``: each
    bucket an Arrow IPC file of its rows in corpus order; or into one bucket (``bits`` 0) when
    the corpus has at most :data:`SPILL_ROWS` rows, which the spill would hold whole anyway.
    For such a corpus 256 small files, and the plan's 256 joins, cost more than the corpus's
    own work (0.3 s of the 0.7 s a plan of an unchanged 20,000-item corpus took).

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
            return _spilled(chain(held, source), CorpusBuckets(directory, bits, spilled))
    return _spilled(held, CorpusBuckets(directory, 0, spilled))


def _spilled(batches: Iterable[pa.RecordBatch], buckets: CorpusBuckets) -> CorpusBuckets:
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
    batch: pa.RecordBatch, buckets: CorpusBuckets
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The rows of ``batch`` in each bucket that holds any, in order, with their :data:`HASH`."""
    hashes = item_hashes(batch.column("item_id").to_pylist())
    bucket_of = hashes & np.uint32((1 << buckets.bits) - 1)
    hashed = pa.RecordBatch.from_arrays([*batch.columns, pa.array(hashes)], schema=buckets.schema)
    return grouped(hashed, bucket_of)
