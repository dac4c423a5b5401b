"""The plan on disk: its rows, its sync units, its async units and failures, and its shards.

A plan's files are written once, as the plan streams by (:func:`write_plan`): none of them is
held whole, however large the corpus or however many of its items fail. The plan and its
sync units are written in row groups of :data:`tasks.tables.GROUP_ROWS` rows, so that what
their writers (and a later reader) keep of each file's metadata stays small however many parts
the plan came in.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from tasks import schemas
from tasks.outcomes import PlanTotals
from tasks.plan.diff import ItemPlan
from tasks.plan.reuse import reuse_decision
from tasks.records import Failure, Unit
from tasks.store import CheckpointStore
from tasks.tables import (
    GroupedWriter,
    StreamedRecords,
    failures_table,
    units_from_table,
    units_table,
)


def _count(totals: PlanTotals, plan: ItemPlan) -> None:
    """Add one item's plan to ``totals``."""
    totals.items[plan.change] += 1
    totals.units_to_embed += len(plan.sync_units)
    totals.async_units += len(plan.async_units)
    totals.keys_to_delete += len(plan.keys_to_delete)
    totals.estimated_cost_usd += plan.estimated_cost_usd


def _count_rows(totals: PlanTotals, rows: pa.Table) -> None:
    """Add plan rows that embed nothing (unchanged or removed items) to ``totals``."""
    for counted in pc.value_counts(rows["change"]).to_pylist():
        totals.items[counted["values"]] += counted["counts"]
    totals.keys_to_delete += pc.sum(pc.list_value_length(rows["keys_to_delete"])).as_py() or 0


def _plan_row(plan: ItemPlan) -> dict[str, object]:
    return {
        "item_id": plan.item_id,
        "uri": plan.uri,
        "modality": plan.modality,
        "change": plan.change,
        "reason": plan.reason,
        "units_to_embed": len(plan.sync_units),
        "async_units": len(plan.async_units),
        "keys_to_delete": list(plan.keys_to_delete),
        "estimated_cost_usd": plan.estimated_cost_usd,
    }


def _sync_rows(plan: ItemPlan) -> list[dict[str, object]]:
    """The plan's sync units as rows of :data:`schemas.SYNC_UNITS` (each with its share of the
    item's estimated cost)."""
    names = schemas.UNITS.names
    share = plan.estimated_cost_usd / max(1, len(plan.units))
    return [
        {**{name: getattr(unit, name) for name in names}, "digest": unit.digest, "cost_usd": share}
        for unit in plan.sync_units
    ]


def write_plan(
    store: CheckpointStore,
    run_id: str,
    plans: Iterable[ItemPlan | Failure | pa.Table],
    shard_size: int,
    config_hash: str,
    batch_rows: int = 1000,
) -> PlanTotals:
    """Stream ``plans`` into the run's plan, its sync units and plan failures; decide which
    units reuse an existing vector (:mod:`tasks.plan.reuse`); cut the others into shards of
    ``shard_size`` (the unit of work of one task run), in plan order, so the same plan always
    yields the same shards. Returns the totals."""
    totals = PlanTotals()
    rows: list[dict[str, object]] = []
    sync_rows: list[dict[str, object]] = []
    with (
        store.table_writer(store.plan_path(run_id), schemas.PLAN) as plan_file,
        store.table_writer(store.sync_units_path(run_id), schemas.SYNC_UNITS) as sync_file,
        store.table_writer(store.plan_failures_path(run_id), schemas.FAILURES) as failures_file,
        store.table_writer(store.async_units_path(run_id), schemas.UNITS) as async_file,
    ):
        plan_writer, sync_writer = GroupedWriter(plan_file), GroupedWriter(sync_file)
        failures = StreamedRecords(failures_file, failures_table, batch_rows)
        async_units = StreamedRecords(async_file, units_table, batch_rows)
        for entry in plans:
            if isinstance(entry, Failure):
                failures.add(entry)
                continue
            if isinstance(entry, pa.Table):
                _count_rows(totals, entry)
                plan_writer.write(entry)
                continue
            _count(totals, entry)
            rows.append(_plan_row(entry))
            sync_rows.extend(_sync_rows(entry))
            for unit in entry.async_units:
                async_units.add(unit)
            if len(rows) >= batch_rows:
                plan_writer.write(pa.Table.from_pylist(rows, schema=schemas.PLAN))
                rows.clear()
            if len(sync_rows) >= batch_rows:
                sync_writer.write(pa.Table.from_pylist(sync_rows, schema=schemas.SYNC_UNITS))
                sync_rows.clear()
        plan_writer.write(pa.Table.from_pylist(rows, schema=schemas.PLAN))
        sync_writer.write(pa.Table.from_pylist(sync_rows, schema=schemas.SYNC_UNITS))
        plan_writer.flush()
        sync_writer.flush()
        failures.flush()
        async_units.flush()
    # The join's buffers, freed, stay with Arrow's allocator; what follows allocates mostly
    # Python objects, which cannot reuse them.
    pa.default_memory_pool().release_unused()
    reuse = reuse_decision(store, run_id, config_hash)
    totals.units_to_embed -= len(reuse.keys)
    totals.units_reused = len(reuse.keys)
    totals.reused_cost_usd = reuse.saved_usd
    totals.estimated_cost_usd -= reuse.saved_usd
    totals.shards = _cut_shards(store, run_id, shard_size, reuse.keys)
    totals.failures = failures.count
    return totals


def _cut_shards(store: CheckpointStore, run_id: str, shard_size: int, reused: pa.Array) -> int:
    """Write the run's sync units other than ``reused`` as shards; returns how many."""
    pending: list[Unit] = []
    shards = 0

    def flush() -> None:
        nonlocal shards
        shards += 1
        store.write_table(store.shard_units_path(run_id, shards), units_table(pending[:shard_size]))
        del pending[:shard_size]

    path = store.sync_units_path(run_id)
    for batch in store.batches(path, schemas.UNITS.names, batch_size=10_000):
        table = pa.Table.from_batches([batch]).cast(schemas.UNITS)
        if len(reused):
            table = table.filter(pc.invert(pc.is_in(table["key"], value_set=reused)))
        pending.extend(units_from_table(table))
        while len(pending) >= shard_size:
            flush()
    while pending:
        flush()
    return shards
