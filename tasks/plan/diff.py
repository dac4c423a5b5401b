"""Planning: the corpus against what the index holds, item by item.

An item is re-embedded when its fingerprint or the embedding config hash changed, and only
then. A changed item's keys that its new version no longer has (pages of a shorter PDF, chunks
of a shorter text) are stale and deleted; every key of a removed item is deleted. An item that
failed through its own fault is remembered as ``quarantined`` and left alone until it changes,
so re-running an unchanged corpus makes no model call at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from tasks import schemas
from tasks.media.images import PreparationError
from tasks.outcomes import Change, PlanTotals
from tasks.plan.units import expanded_item
from tasks.records import Failure, Item, Unit, routed
from tasks.settings import EmbeddingSettings, Prices
from tasks.state import StateEntry
from tasks.store import CheckpointStore
from tasks.tables import failures_table, units_table


@dataclass(frozen=True)
class ItemPlan:
    """What a run does with one item and why."""

    item_id: str
    uri: str
    modality: str
    change: Change
    reason: str
    units: tuple[Unit, ...] = ()
    keys_to_delete: tuple[str, ...] = ()
    estimated_cost_usd: float = 0.0
    fingerprint: str = ""

    @property
    def sync_units(self) -> tuple[Unit, ...]:
        """Units embedded with InvokeModel in this run."""
        return routed(self.units, "sync")

    @property
    def async_units(self) -> tuple[Unit, ...]:
        """Units left to async jobs."""
        return routed(self.units, "async")


def item_change(item: Item, previous: StateEntry | None, config_hash: str) -> tuple[Change, str]:
    """Whether ``item`` is new, changed or unchanged against the index, and a reason to show."""
    if previous is None:
        return "new", "not in the index yet"
    if previous.status == "incomplete":
        return "changed", "an earlier run left it incomplete (transient failures)"
    if previous.fingerprint != item.fingerprint:
        return "changed", "content changed"
    if previous.config_hash != config_hash:
        return "changed", f"embedding settings changed ({previous.config_hash} → {config_hash})"
    if previous.metadata_json != item.metadata_json:
        # Vectors carry the item's metadata, so they are written again with the new one.
        return "changed", "metadata changed"
    if previous.status == "quarantined":
        return "unchanged", "quarantined earlier; skipped until the file changes"
    return "unchanged", "same content and settings"


def planned_items(
    items: Iterable[Item | Failure],
    state: Mapping[str, StateEntry],
    settings: EmbeddingSettings,
    prices: Prices,
    local_path_of: Callable[[Item], Path],
    partial: bool = False,
) -> Iterator[ItemPlan | Failure]:
    """One ItemPlan per current item, then one per removed item; Failures for bad items.

    With ``partial``, ``items`` are part of the corpus only (one partition of a backfill): an
    item of the state they do not list is not removed, so no removed items are planned.

    An item that cannot be expanded (corrupt, encrypted, over the limits …) yields its Failure
    and then its ItemPlan, with no units: it is quarantined, and when it is a changed item its
    old vectors are deleted, so the index never holds a version the corpus no longer has.
    """
    config_hash = settings.config_hash()
    seen: set[str] = set()
    for entry in items:
        if isinstance(entry, Failure):
            yield entry
            continue
        seen.add(entry.item_id)
        previous = state.get(entry.item_id)
        change, reason = item_change(entry, previous, config_hash)
        old_keys = previous.keys if previous is not None else ()
        common = {"item_id": entry.item_id, "uri": entry.uri, "modality": entry.modality}
        if change == "unchanged":
            yield ItemPlan(change=change, reason=reason, fingerprint=entry.fingerprint, **common)
            continue
        try:
            expansion = expanded_item(entry, local_path_of(entry), settings, prices)
        except (PreparationError, OSError) as exc:
            code = getattr(exc, "code", "unreadable")
            yield Failure(entry.item_id, entry.uri, "plan", code, str(exc))
            # Still the item's plan row: the run counts it as an item and commits its state.
            removal = "; its old vectors are removed" if old_keys else ""
            yield ItemPlan(
                change=change,
                reason=f"unusable ({code}){removal}",
                keys_to_delete=old_keys,
                fingerprint=entry.fingerprint,
                **common,
            )
            continue
        new_keys = {unit.key for unit in expansion.sync_units}
        # Async segment keys are known only when a job ends; until then the old ones stay.
        keep = new_keys if not expansion.async_units else new_keys | set(old_keys)
        yield ItemPlan(
            change=change,
            reason=reason,
            units=expansion.units,
            keys_to_delete=tuple(key for key in old_keys if key not in keep),
            estimated_cost_usd=expansion.estimated_cost_usd,
            fingerprint=entry.fingerprint,
            **common,
        )
    if partial:
        return
    for item_id, previous in state.items():
        if item_id not in seen:
            yield ItemPlan(
                item_id=item_id,
                uri=previous.uri,
                modality="",
                change="removed",
                reason="no longer in the corpus",
                keys_to_delete=previous.keys,
            )


def _count(totals: PlanTotals, plan: ItemPlan) -> None:
    """Add one item's plan to ``totals``."""
    totals.items[plan.change] += 1
    totals.units_to_embed += len(plan.sync_units)
    totals.async_units += len(plan.async_units)
    totals.keys_to_delete += len(plan.keys_to_delete)
    totals.estimated_cost_usd += plan.estimated_cost_usd


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


def write_plan(
    store: CheckpointStore,
    run_id: str,
    plans: Iterable[ItemPlan | Failure],
    shard_size: int,
    batch_rows: int = 1000,
) -> PlanTotals:
    """Stream ``plans`` into the run's plan, shard files and plan failures; returns the totals.

    Sync units are cut into shards of ``shard_size`` (the unit of work of one task run), in
    plan order, so the same plan always yields the same shards.
    """
    totals = PlanTotals()
    pending_units: list[Unit] = []
    failures: list[Failure] = []
    async_units: list[Unit] = []
    rows: list[dict[str, object]] = []

    def flush_shard() -> None:
        totals.shards += 1
        store.write_table(
            store.shard_units_path(run_id, totals.shards), units_table(pending_units[:shard_size])
        )
        del pending_units[:shard_size]

    with store.table_writer(store.plan_path(run_id), schemas.PLAN) as plan_writer:
        for entry in plans:
            if isinstance(entry, Failure):
                failures.append(entry)
                continue
            _count(totals, entry)
            rows.append(_plan_row(entry))
            pending_units.extend(entry.sync_units)
            async_units.extend(entry.async_units)
            while len(pending_units) >= shard_size:
                flush_shard()
            if len(rows) >= batch_rows:
                plan_writer.write_table(pa.Table.from_pylist(rows, schema=schemas.PLAN))
                rows.clear()
        if rows:
            plan_writer.write_table(pa.Table.from_pylist(rows, schema=schemas.PLAN))
    while pending_units:
        flush_shard()
    totals.failures = len(failures)
    store.write_table(store.plan_failures_path(run_id), failures_table(failures))
    store.write_table(store.async_units_path(run_id), units_table(async_units))
    return totals
