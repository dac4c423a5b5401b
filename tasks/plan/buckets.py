"""The corpus of a run as the rows that claim item ids, to be spilled by the id hash
(:mod:`tasks.spill`).

The corpus streams in once, in record batches; each batch's rows are sorted into one file per
bucket (``<scratch>/bucket-<bucket>.arrow``), keeping their order. The plan then reads one
bucket at a time beside the matching part of the state, so its memory follows the size of a
bucket, never the size of the corpus. Every row that claims an item id is spilled (the items,
and the rows that failed after claiming theirs), so that all the claims on an id meet in one
bucket, where ``tasks.plan.claims`` tells which row keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa

from tasks import schemas
from tasks.records import Failure, Item

BATCH_ROWS = 20_000

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
