"""How a run ended for its items, counted a part of the item-id hash at a time.

An item's outcome joins three things by its id: its plan row (new, changed, unchanged), its
failures, and whether the run wrote a vector of it. At a hundred million items none of the
three fits in memory, so each is spilled by the id hash (:mod:`tasks.spill`) and joined a
bucket at a time; a run of up to ``SPILL_ROWS`` rows of each is one bucket, held whole.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tasks.outcomes import PlanTotals
from tasks.plan.scratch import plan_scratch
from tasks.records import ROW_STAGE
from tasks.service_errors import RETRIED_NEXT_RUN_CODES
from tasks.spill import BUCKET_BITS, SpilledBuckets, bucket_parts, spilled_buckets
from tasks.store import CheckpointStore

_PLANNED = pa.schema([("item_id", pa.string()), ("change", pa.string())])
_FAILED = pa.schema([("item_id", pa.string()), ("stage", pa.string()), ("code", pa.string())])
_WRITTEN = pa.schema([("item_id", pa.string())])
_RETRIED = pa.array(sorted(RETRIED_NEXT_RUN_CODES), pa.string())


@dataclass(frozen=True)
class ItemOutcomes:
    """How this run ended for each item of the corpus, counted; every item is in exactly one
    count. ``planned`` is the items the corpus resolved to (new, changed and unchanged; removed
    items are not in the corpus). ``embedded``: new or changed, and every unit embedded, with no
    failure (state ``complete``). ``unchanged``: skipped, as the index already has it.
    ``quarantined``: new or changed, and failed through its own fault, in planning or in a unit
    (state ``quarantined``; left alone until it changes). ``failed``: new or changed, with a
    failure a later run may well not meet (throttled, a shard or job that failed); planned again
    by the next run. ``rows_rejected``: manifest rows that never became an item (malformed, bad
    metadata, a duplicate id, a missing file …); they are rows, not items, in no item count."""

    planned: int
    embedded: int
    unchanged: int
    quarantined: int
    failed: int
    rows_rejected: int

    @property
    def adds_up(self) -> bool:
        """``planned == embedded + unchanged + quarantined + failed``."""
        return self.planned == self.embedded + self.unchanged + self.quarantined + self.failed


def outcome_counts(
    store: CheckpointStore, run_id: str, totals: PlanTotals, failures_path: str
) -> tuple[ItemOutcomes, dict[str, int]]:
    """How the run ended for its items, and its failures counted by code (in code order),
    reading the plan, the embeddings and the failures at ``failures_path`` (the gathered
    failures file) once each.

    The items are counted by the rule the state is committed by: an item's own failures (plan
    stage or later) decide it, a transient one first; a manifest row's never do. ``embedded``
    is counted from the vectors the run wrote, not as what is left over, so an item that ended
    with neither a vector nor a failure breaks the identity instead of hiding."""
    embeddings = store.list_files(store.embeddings_dir(run_id))
    counts: Counter[str] = Counter()
    codes: Counter[str] = Counter()
    with plan_scratch() as scratch:
        planned = _spilled(scratch, "planned", _PLANNED, _planned(store, run_id))
        failures = _coded(_batches(store, [failures_path], _FAILED), codes)
        failed = _spilled(scratch, "failed", _FAILED, failures)
        written = _spilled(scratch, "written", _WRITTEN, _batches(store, embeddings, _WRITTEN))
        spills = (planned, failed, written)
        bits = max(spill.bits for spill in spills)
        for parts in zip(*(bucket_parts(spill, bits) for spill in spills), strict=True):
            counts.update(_bucket_counts(*parts))
    items = ItemOutcomes(
        planned=sum(totals.items.get(change, 0) for change in ("new", "changed", "unchanged")),
        embedded=counts["embedded"],
        unchanged=counts["unchanged"],
        quarantined=counts["quarantined"],
        failed=counts["failed"],
        rows_rejected=counts["rows_rejected"],
    )
    return items, dict(sorted(codes.items()))


def _coded(batches: Iterator[pa.RecordBatch], codes: Counter[str]) -> Iterator[pa.RecordBatch]:
    """``batches`` of failures, each counted by code into ``codes`` as it passes."""
    for batch in batches:
        for entry in pc.value_counts(batch.column("code")).to_pylist():
            codes[entry["values"]] += entry["counts"]
        yield batch


def _bucket_counts(planned: pa.Table, failed: pa.Table, written: pa.Table) -> dict[str, int]:
    """The counts of the items of one bucket (their plan rows, failures and written vectors)."""
    ids = planned.column("item_id")
    worked = pc.not_equal(planned.column("change"), "unchanged")
    is_row = pc.equal(failed.column("stage"), ROW_STAGE)
    own = failed.filter(pc.invert(is_row))
    retried = pc.is_in(own.column("code"), value_set=_RETRIED)
    failing = pc.is_in(ids, value_set=pc.unique(own.column("item_id")))
    retrying = pc.is_in(ids, value_set=pc.unique(own.filter(retried).column("item_id")))
    with_vectors = pc.is_in(ids, value_set=pc.unique(written.column("item_id")))
    return {
        "embedded": _true_count(pc.and_(worked, pc.and_not(with_vectors, failing))),
        "unchanged": planned.num_rows - _true_count(worked),
        "quarantined": _true_count(pc.and_(worked, pc.and_not(failing, retrying))),
        "failed": _true_count(pc.and_(worked, retrying)),
        "rows_rejected": _true_count(is_row),
    }


def _planned(store: CheckpointStore, run_id: str) -> Iterator[pa.RecordBatch]:
    """The plan's rows of the items in the corpus (not the removed ones)."""
    for batch in _batches(store, [store.plan_path(run_id)], _PLANNED):
        yield batch.filter(pc.not_equal(batch.column("change"), "removed"))


def _batches(
    store: CheckpointStore, paths: list[str], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    """The ``schema`` columns of the Parquet files at ``paths``, a record batch at a time."""
    for path in paths:
        for batch in store.batches(path, schema.names):
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)


def _spilled(
    scratch: str, name: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
) -> SpilledBuckets:
    directory = os.path.join(scratch, name)
    os.mkdir(directory)
    return spilled_buckets(batches, directory, BUCKET_BITS, schema)


def _true_count(mask: pa.ChunkedArray | pa.Array) -> int:
    return pc.sum(mask.cast(pa.int64())).as_py() or 0
