"""Which row keeps an item id: of the rows that claim one id, the first in the manifest.

Resolving a corpus (``tasks.corpus.resolve``) does not tell duplicate ids apart, since that
would mean holding every id of the corpus (~10 GB at a hundred million). Every row that claims
an id is spilled by the id's hash instead (:mod:`tasks.spill`), so all the claims on an id
meet in one bucket, and here, a bucket at a time, the first claim keeps the id: an item goes on
to be planned, a failed row keeps its own failure, and every later claim is a ``duplicate_id``
failure naming the row that keeps the id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tasks import schemas
from tasks.corpus.resolve import shown_id
from tasks.plan.buckets import CLAIM_CODE, CLAIM_MESSAGE, POSITION
from tasks.records import ROW_STAGE
from tasks.spill import SpilledBuckets

_CLAIM_COLUMNS = [POSITION, CLAIM_CODE, CLAIM_MESSAGE]


def kept_claims(claims: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The items that keep their ids (manifest rows, with their ``item_hash`` when ``claims``
    has it, in corpus order) and the failures (:data:`tasks.schemas.FAILURES`, in manifest
    order) of one bucket's ``claims`` (:meth:`SpilledBuckets.read`): failed rows that keep their
    ids, with their own failure, and every later claim on an id as ``duplicate_id``."""
    if not claims.num_rows:
        return claims.drop_columns(_CLAIM_COLUMNS), schemas.FAILURES.empty_table()
    keeps, first = first_claims(claims, POSITION)
    failed = pc.is_valid(claims[CLAIM_CODE])
    items = claims.filter(pc.and_not(keeps, failed)).drop_columns(_CLAIM_COLUMNS)
    kept_failures = claims.filter(pc.and_(keeps, failed))
    repeats = pc.invert(keeps)
    later = claims.filter(repeats)
    messages = [
        f"id {shown_id(item_id)} is already used by the row at position {position}; "
        "ids must be unique"
        for item_id, position in zip(
            later["item_id"].to_pylist(), first.filter(repeats).to_pylist(), strict=True
        )
    ]
    failures = pa.concat_tables(
        [
            _failures(kept_failures, kept_failures[CLAIM_CODE], kept_failures[CLAIM_MESSAGE]),
            _failures(
                later,
                pa.array(["duplicate_id"] * later.num_rows, pa.string()),
                pa.array(messages, pa.string()),
            ),
        ]
    )
    failures = failures.sort_by(POSITION).drop_columns([POSITION])
    return items, failures


def first_claims(
    claims: pa.Table, position: str, key: str = "item_id"
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """For each row of ``claims`` (a ``key`` column, by default the item id, and the
    ``position`` column that orders the rows): whether it is the first claim on its key, and
    where that first claim is."""
    firsts = claims.group_by(key).aggregate([(position, "min")])
    first = firsts[f"{position}_min"].take(pc.index_in(claims[key], firsts[key]))
    return pc.equal(claims[position], first), first


def _failures(
    claims: pa.Table, codes: pa.ChunkedArray | pa.Array, messages: pa.ChunkedArray | pa.Array
) -> pa.Table:
    count = claims.num_rows
    return pa.table(
        {
            "item_id": claims["item_id"],
            "uri": claims["uri"],
            "unit_key": pa.nulls(count, pa.string()),
            "stage": pa.array([ROW_STAGE] * count, pa.string()),
            "code": codes,
            "message": messages,
            "attempts": pa.array([1] * count, pa.int32()),
            POSITION: claims[POSITION],
        },
        schema=schemas.FAILURES.append(pa.field(POSITION, pa.int64(), nullable=False)),
    )


@dataclass(frozen=True)
class KeptBuckets:
    """A spilled corpus read a bucket at a time as the items that keep their ids
    (:func:`kept_claims`). As each bucket is read, its kept items go to ``on_items`` (manifest
    rows, :data:`tasks.schemas.MANIFEST`) and its failures to ``on_failures``; read each bucket
    once (as :func:`tasks.plan.diff.planned_items` does) and each goes there once."""

    spilled: SpilledBuckets
    on_items: Callable[[pa.Table], object]
    on_failures: Callable[[pa.Table], object]

    @property
    def bits(self) -> int:
        """The spill's bucket bits (:attr:`SpilledBuckets.bits`)."""
        return self.spilled.bits

    def read(self, bucket: int) -> pa.Table:
        """The items of ``bucket`` that keep their ids: manifest rows and each id's
        ``item_hash``, in corpus order."""
        items, failures = kept_claims(self.spilled.read(bucket))
        if failures.num_rows:
            self.on_failures(failures)
        if items.num_rows:
            self.on_items(items.select(schemas.MANIFEST.names))
        return items
