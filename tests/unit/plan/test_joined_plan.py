"""The plan joins the corpus with the state bucket by bucket, in Arrow; its decisions must be the
ones the item-by-item plan made against a dict of the whole state (the reference here), for
every kind of change, whatever the number of partitions."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tasks import spill
from tasks.plan import buckets as corpus_buckets
from tasks.plan.diff import ItemPlan, planned_item
from tasks.plan.stage import planned_run
from tasks.records import Failure, Item
from tasks.settings import NovaflowSettings
from tasks.state import layout as state_layout
from tasks.state.dataset import StateDataset, StateEntry, entries_table
from tasks.store import CheckpointStore

ITEMS = 600
KINDS = (
    "unchanged", "new", "content", "config", "metadata", "incomplete", "quarantined",
    "shorter", "unusable", "removed",
)  # fmt: skip


def _corpus_and_state(root: Path, config_hash: str) -> tuple[list[Item], list[StateEntry]]:
    """A corpus of text files and a state with every kind of difference between them."""
    rng = random.Random(14)
    items: list[Item] = []
    state: list[StateEntry] = []
    for n in range(ITEMS):
        kind = KINDS[n % len(KINDS)]
        item_id = f"docs/{rng.randrange(10**9):09d}-{n}.txt"
        path = root / f"{n}.txt"
        text = "river delta sediment " * (rng.randrange(1, 4) if kind != "shorter" else 1)
        if kind == "unusable":
            path.write_bytes(bytes(range(256)) * 8)  # not text: quarantined when planned
        else:
            path.write_text(text)
        item = Item(item_id, str(path), "text", f"sha256:{n}", path.stat().st_size)
        entry = StateEntry(
            item_id=item_id,
            uri=str(path),
            fingerprint=f"sha256:{n}",
            config_hash=config_hash,
            keys=(f"{item_id}#chunk=0",),
            modality="text",
        )
        changes: dict[str, dict[str, object]] = {
            "content": {"fingerprint": "sha256:old"},
            "config": {"config_hash": "0ld-config"},
            "metadata": {"metadata_json": '{"team": "old"}'},
            "incomplete": {"status": "incomplete"},
            "quarantined": {"status": "quarantined", "keys": ()},
            "shorter": {"fingerprint": "sha256:old", "keys": tuple(
                f"{item_id}#chunk={c}" for c in range(3))},
            "unusable": {"fingerprint": "sha256:old"},
        }  # fmt: skip
        if kind != "new":
            state.append(StateEntry(**{**entry.__dict__, **changes.get(kind, {})}))
        if kind != "removed":
            items.append(item)
    return items, state


def _reference(
    items: list[Item], state: list[StateEntry], settings: NovaflowSettings
) -> Iterator[ItemPlan | Failure]:
    """The plan as novaflow made it before its state was partitioned: item by item against a
    dict of the whole state, then the removed items."""
    held = {entry.item_id: entry for entry in state}
    config_hash = settings.embedding.config_hash()
    for item in items:
        yield from planned_item(
            item, held.get(item.item_id), config_hash, settings.embedding, settings.prices,
            lambda item: Path(item.uri),
        )  # fmt: skip
    listed = {item.item_id for item in items}
    for entry in state:
        if entry.item_id not in listed:
            yield ItemPlan(entry.item_id, entry.uri, "", "removed", "no longer in the corpus",
                           keys_to_delete=entry.keys)  # fmt: skip


def _decision(row: dict[str, object]) -> tuple[object, ...]:
    return (
        row["change"], row["reason"], row["units_to_embed"], row["async_units"],
        tuple(sorted(row["keys_to_delete"])), round(float(row["estimated_cost_usd"]), 12),
    )  # fmt: skip


@pytest.mark.parametrize("spill_rows", [256_000, 100], ids=["one-bucket", "256-buckets"])
@pytest.mark.parametrize("mean_items", [4096, 16, 1], ids=["1-partition", "sub-buckets", "512"])
def test_the_joined_plan_decides_as_the_item_by_item_plan_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mean_items: int, spill_rows: int
) -> None:
    monkeypatch.setattr(state_layout, "MAX_MEAN_ITEMS", mean_items)
    # A corpus larger than SPILL_ROWS is spilled to 256 buckets, a smaller one to one bucket.
    monkeypatch.setattr(spill, "SPILL_ROWS", spill_rows)
    settings = NovaflowSettings(store=str(tmp_path / "store"))
    store = CheckpointStore(settings.store)
    (tmp_path / "corpus").mkdir()
    items, state = _corpus_and_state(tmp_path / "corpus", settings.embedding.config_hash())
    dataset = StateDataset(store, settings.index.vector_bucket, settings.index.index)
    layout = dataset.replaced(entries_table(state), run_id="earlier")
    assert layout.partitions == {4096: 1, 16: 64, 1: 1024}[mean_items]

    totals = planned_run(settings, lambda: items, "run-1")

    plan = pq.read_table(store.plan_path("run-1")).to_pylist()
    reference = list(_reference(items, state, settings))
    expected = {p.item_id: _decision(p.__dict__ | {
        "units_to_embed": len(p.sync_units), "async_units": len(p.async_units)})
        for p in reference if isinstance(p, ItemPlan)}  # fmt: skip
    assert {row["item_id"]: _decision(row) for row in plan} == expected
    assert len(plan) == len(expected)  # one row per item, none twice
    failures = store.read_table(store.plan_failures_path("run-1")).to_pylist()
    assert {(f["item_id"], f["code"]) for f in failures} == {
        (f.item_id, f.code) for f in reference if isinstance(f, Failure)
    }
    changes = {change for change, *_ in expected.values()}
    assert changes == {"new", "changed", "unchanged", "removed"}
    assert totals.items == {
        change: sum(1 for c, *_ in expected.values() if c == change) for change in changes
    }
    units = [
        key
        for path in store.list_files(store.run_dir("run-1") + "/shards")
        for key in pq.read_table(path, columns=["key"]).column("key").to_pylist()
    ]
    assert len(units) == len(set(units)) == totals.units_to_embed


def test_a_corpus_the_spill_holds_whole_goes_to_one_bucket_a_larger_one_to_256(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "corpus").mkdir()
    items, _ = _corpus_and_state(tmp_path / "corpus", "config")
    batches = list(corpus_buckets.corpus_batches(items, [].append, batch_rows=50))
    monkeypatch.setattr(spill, "SPILL_ROWS", len(items))
    (tmp_path / "one").mkdir(), (tmp_path / "many").mkdir()
    whole = spill.spilled_buckets(batches, str(tmp_path / "one"), 8, corpus_buckets.CLAIMS)
    monkeypatch.setattr(spill, "SPILL_ROWS", len(items) - 1)
    spread = spill.spilled_buckets(batches, str(tmp_path / "many"), 8, corpus_buckets.CLAIMS)

    assert (whole.bits, spread.bits) == (0, 8)
    assert whole.read(0)["item_id"].to_pylist() == [item.item_id for item in items]
    in_buckets = [spread.read(bucket)["item_id"].to_pylist() for bucket in range(256)]
    assert sorted(i for ids in in_buckets for i in ids) == sorted(item.item_id for item in items)
    assert sum(1 for ids in in_buckets if ids) > 200  # spread over the buckets
