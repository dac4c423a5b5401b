"""Planning: the corpus against what the index holds, item by item.

An item is re-embedded when its fingerprint or the embedding config hash changed, and only
then. A changed item's keys that its new version no longer has (pages of a shorter PDF, chunks
of a shorter text) are stale and deleted; every key of a removed item is deleted. An item that
failed through its own fault is remembered as ``quarantined`` and left alone until it changes,
so re-running an unchanged corpus makes no model call at all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import schemas
from tasks.media.images import PreparationError
from tasks.outcomes import Change
from tasks.plan.claims import KeptBuckets
from tasks.plan.units import expanded_item
from tasks.records import Failure, Item, Unit, routed
from tasks.settings import EmbeddingSettings, Prices
from tasks.spill import HASH
from tasks.state.dataset import StateDataset, StateEntry
from tasks.state.layout import StateLayout, partitions_of

UNCHANGED_REASON = "same content and settings"
QUARANTINED_REASON = "quarantined earlier; skipped until the file changes"
REMOVED_REASON = "no longer in the corpus"


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
        return "unchanged", QUARANTINED_REASON
    return "unchanged", UNCHANGED_REASON


def planned_item(
    item: Item,
    previous: StateEntry | None,
    config_hash: str,
    settings: EmbeddingSettings,
    prices: Prices,
    local_path_of: Callable[[Item], Path],
) -> Iterator[ItemPlan | Failure]:
    """The plan of one current item against its ``previous`` entry in the state.

    An item that cannot be expanded (corrupt, encrypted, over the limits …) yields its Failure
    and then its ItemPlan, with no units: it is quarantined, and when it is a changed item its
    old vectors are deleted, so the index never holds a version the corpus no longer has.
    """
    change, reason = item_change(item, previous, config_hash)
    old_keys = previous.keys if previous is not None else ()
    common = {"item_id": item.item_id, "uri": item.uri, "modality": item.modality}
    if change == "unchanged":
        yield ItemPlan(change=change, reason=reason, fingerprint=item.fingerprint, **common)
        return
    try:
        expansion = expanded_item(item, local_path_of(item), settings, prices)
    except (PreparationError, OSError) as exc:
        code = getattr(exc, "code", "unreadable")
        yield Failure(item.item_id, item.uri, "plan", code, str(exc))
        # Still the item's plan row: the run counts it as an item and commits its state.
        removal = "; its old vectors are removed" if old_keys else ""
        yield ItemPlan(
            change=change,
            reason=f"unusable ({code}){removal}",
            keys_to_delete=old_keys,
            fingerprint=item.fingerprint,
            **common,
        )
        return
    new_keys = {unit.key for unit in expansion.sync_units}
    # Async segment keys are known only when a job ends; until then the old ones stay.
    keep = new_keys if not expansion.async_units else new_keys | set(old_keys)
    yield ItemPlan(
        change=change,
        reason=reason,
        units=expansion.units,
        keys_to_delete=tuple(key for key in old_keys if key not in keep),
        estimated_cost_usd=expansion.estimated_cost_usd,
        fingerprint=item.fingerprint,
        **common,
    )


def _plan_rows(
    item_ids: pa.ChunkedArray | pa.Array,
    uris: pa.ChunkedArray | pa.Array,
    modality: pa.ChunkedArray | pa.Array,
    change: str,
    reasons: pa.ChunkedArray | pa.Array,
    keys_to_delete: pa.ChunkedArray | pa.Array,
) -> pa.Table:
    """Plan rows of items that embed nothing, built column by column."""
    count = len(item_ids)
    return pa.table(
        {
            "item_id": item_ids,
            "uri": uris,
            "modality": modality,
            "change": pa.array([change] * count, pa.string()),
            "reason": reasons,
            "units_to_embed": pa.nulls(count, pa.int64()).fill_null(0),
            "async_units": pa.nulls(count, pa.int64()).fill_null(0),
            "keys_to_delete": keys_to_delete,
            "estimated_cost_usd": pa.nulls(count, pa.float64()).fill_null(0.0),
        },
        schema=schemas.PLAN,
    )


def _differs(before: pa.ChunkedArray, now: pa.ChunkedArray | pa.Scalar) -> pa.ChunkedArray:
    return pc.fill_null(pc.not_equal(before, now), True)


def bucket_plans(
    corpus: pa.Table,
    held: pa.Table,
    config_hash: str,
    expand: Callable[[Item, StateEntry | None], Iterator[ItemPlan | Failure]],
    partial: bool,
) -> Iterator[ItemPlan | Failure | pa.Table]:
    """The plan of one bucket: the corpus's items in it (``corpus``, manifest rows) joined with
    the state's (``held``) on the item id, in Arrow.

    Unchanged items and removed ones come out as tables of plan rows, never as Python objects;
    only new and changed items are expanded one by one (``expand``), since their files must be
    opened. The decisions and reasons are :func:`item_change`'s.
    """
    position = pc.index_in(corpus["item_id"], value_set=held["item_id"])
    previous = held.take(position)
    status = previous["status"]
    needs_expansion = pc.or_(
        pc.or_(
            pc.is_null(position),
            pc.fill_null(pc.equal(status, "incomplete"), False),
        ),
        pc.or_(
            pc.or_(
                _differs(previous["fingerprint"], corpus["fingerprint"]),
                _differs(previous["config_hash"], pa.scalar(config_hash)),
            ),
            _differs(previous["metadata_json"], corpus["metadata_json"]),
        ),
    )
    same = pc.invert(needs_expansion)
    unchanged = corpus.filter(same)
    if unchanged.num_rows:
        quarantined = pc.equal(status.filter(same), "quarantined")
        reasons = pc.if_else(quarantined, QUARANTINED_REASON, UNCHANGED_REASON)
        no_keys = pa.array([[]] * unchanged.num_rows, pa.list_(pa.string()))
        yield _plan_rows(
            unchanged["item_id"], unchanged["uri"], unchanged["modality"], "unchanged",
            reasons, no_keys,
        )  # fmt: skip
    expanded = corpus.filter(needs_expansion)
    if expanded.num_rows:
        before = previous.filter(needs_expansion).to_pylist()
        for row, entry in zip(expanded.to_pylist(), before, strict=True):
            known = StateEntry.from_row(entry) if entry["item_id"] is not None else None
            yield from expand(Item(**row), known)
    if partial:
        return
    removed = held.filter(pc.invert(pc.is_in(held["item_id"], value_set=corpus["item_id"])))
    if removed.num_rows:
        reasons = pa.array([REMOVED_REASON] * removed.num_rows, pa.string())
        modality = pa.array([""] * removed.num_rows, pa.string())
        yield _plan_rows(
            removed["item_id"], removed["uri"], modality, "removed", reasons, removed["keys"]
        )


def planned_items(
    buckets: KeptBuckets,
    state: StateDataset,
    layout: StateLayout,
    settings: EmbeddingSettings,
    prices: Prices,
    local_path_of: Callable[[Item], Path],
    partial: bool = False,
) -> Iterator[ItemPlan | Failure | pa.Table]:
    """The plan of every current item and every removed one, bucket by bucket; Failures for
    items that cannot be embedded (see :func:`planned_item`).

    ``buckets`` is the corpus spilled by the item-id hash the state is partitioned by, so each
    bucket meets the items of one part of the state (:func:`_joined_parts`); each bucket is
    read once, so its kept items and failures are recorded once. With ``partial``, the
    corpus is part of the whole only (one partition of a backfill): an item of the state it
    does not list is not removed, so no removed items are planned.
    """
    config_hash = settings.config_hash()

    def expand(item: Item, previous: StateEntry | None) -> Iterator[ItemPlan | Failure]:
        return planned_item(item, previous, config_hash, settings, prices, local_path_of)

    for held, corpus in _joined_parts(buckets, state, layout):
        if corpus.num_rows or held.num_rows:
            yield from bucket_plans(corpus, held, config_hash, expand, partial)


def _joined_parts(
    buckets: KeptBuckets, state: StateDataset, layout: StateLayout
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """The state's items and the corpus's (manifest rows) of one part of the item-id hash at a
    time, every part once. With fewer partitions than buckets, a partition is read once and cut
    into its buckets; with more, a bucket is read once and cut into its partitions, so that
    what is joined at a time is a partition's worth or less, however large the state."""
    if layout.bits <= buckets.bits:
        for part in range(layout.partitions):
            held = state.partition(layout, part)
            if layout.bits == buckets.bits:
                yield held, _manifest_rows(buckets.read(part))
                continue
            in_bucket = pa.array(partitions_of(held["item_id"], buckets.bits))
            for bucket in range(part, 1 << buckets.bits, layout.partitions):
                yield held.filter(pc.equal(in_bucket, bucket)), _manifest_rows(buckets.read(bucket))
        return
    mask = np.uint32(layout.partitions - 1)
    for bucket in range(1 << buckets.bits):
        corpus = buckets.read(bucket)
        in_part = pa.array(corpus[HASH].to_numpy() & mask)
        for part in range(bucket, layout.partitions, 1 << buckets.bits):
            rows = _manifest_rows(corpus.filter(pc.equal(in_part, part)))
            yield state.partition(layout, part), rows


def _manifest_rows(spilled: pa.Table) -> pa.Table:
    return spilled.select(schemas.MANIFEST.names)
