"""The state's partitions: where items go, how deltas and removals read back, when a partition
is folded, and how an earlier novaflow's single-file state is migrated."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from tasks import schemas
from tasks.state import layout as state_layout
from tasks.state.dataset import MAX_DELTAS, StateDataset, StateEntry, entries_table, removals
from tasks.state.layout import StateLayout, bits_for, partitions_of
from tasks.store import CheckpointStore


def _entry(item_id: str, version: str = "v1") -> StateEntry:
    return StateEntry(item_id, f"/corpus/{item_id}", version, "cfg", (f"{item_id}#chunk=0",),
                      modality="text")  # fmt: skip


def _dataset(tmp_path: Path) -> StateDataset:
    return StateDataset(CheckpointStore(str(tmp_path / "store")), "bucket", "index")


def test_ids_that_differ_in_a_digit_spread_over_the_partitions() -> None:
    ids = pa.array([f"docs/report-{n:06d}.pdf" for n in range(64_000)])
    counts = Counter(partitions_of(ids, 6).tolist())
    assert len(counts) == 64
    assert max(counts.values()) < 1.15 * 1000
    assert min(counts.values()) > 0.85 * 1000


def test_the_partition_of_an_id_is_stable_and_splits_in_two() -> None:
    ids = pa.array(["a.txt", "b/c.pdf", "ü.png"])
    assert partitions_of(ids, 8).tolist() == partitions_of(ids, 8).tolist()
    at_9 = partitions_of(ids, 9)
    assert (at_9 % 256).tolist() == partitions_of(ids, 8).tolist()


def test_partitions_double_as_the_state_grows() -> None:
    assert bits_for(0) == bits_for(4096) == 0
    assert bits_for(4097) == 1
    assert bits_for(100_000_000) == state_layout.MAX_BITS


def test_a_layout_reads_back_what_it_wrote() -> None:
    layout = StateLayout.empty(2)
    assert StateLayout.from_json(layout.to_json()) == layout
    with pytest.raises(ValueError, match="format"):
        StateLayout.from_json('{"format": 99, "bits": 0, "partitions": []}')


def test_deltas_read_back_as_the_latest_row_of_each_item_without_removed_ones(
    tmp_path: Path,
) -> None:
    dataset = _dataset(tmp_path)
    layout = dataset.replaced(entries_table([_entry(f"item-{n}") for n in range(300)]), "r0")
    before = dataset.partition(layout, 0)
    changed = entries_table([_entry("item-7", "v2"), _entry("new")])
    delta = pa.concat_tables([changed, removals(["item-9"])])
    now = pa.concat_tables([
        before.filter(pa.compute.invert(pa.compute.is_in(
            before["item_id"], value_set=pa.array(["item-7", "item-9"])))),
        changed,
    ])  # fmt: skip
    part, superseded = dataset.written_partition(layout, 0, now, delta, "r1")
    assert len(part.files) == 2
    assert part.delta_rows == 3
    assert superseded == ()
    layout = layout.with_parts({0: part}, "r1")
    read = {row["item_id"]: row for row in dataset.partition(layout, 0).to_pylist()}
    assert len(read) == 300
    assert "item-9" not in read
    assert read["item-7"]["fingerprint"] == "v2"
    assert read == {row["item_id"]: row for row in now.to_pylist()}


def test_a_partition_is_folded_into_a_new_base_when_its_deltas_grow(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path)
    layout = dataset.replaced(entries_table([_entry(f"item-{n}") for n in range(400)]), "r0")
    for run in range(1, MAX_DELTAS + 2):
        now = dataset.partition(layout, 0)
        delta = entries_table([_entry(f"item-{run}", f"v{run}")])
        part, superseded = dataset.written_partition(layout, 0, now, delta, f"r{run}")
        layout = layout.with_parts({0: part}, f"r{run}")
    assert part.files == (f"part-00000.r{MAX_DELTAS + 1}.parquet",)  # folded
    assert len(superseded) == MAX_DELTAS + 1
    assert part.delta_rows == 0
    # a quarter of the base changed at once is folded straight away
    now = dataset.partition(layout, 0)
    big = entries_table([_entry(f"item-{n}", "v9") for n in range(150)])
    part, _ = dataset.written_partition(layout, 0, now, big, "big")
    assert part.files == ("part-00000.big.parquet",)


def test_a_single_file_state_is_migrated_on_first_read(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    entries = [_entry(f"item-{n}") for n in range(5000)]
    legacy = store.legacy_state_path("bucket", "index")
    store.write_table(legacy, pa.Table.from_pylist(
        [entries_table([e]).to_pylist()[0] for e in entries], schema=schemas.STATE))  # fmt: skip
    dataset = StateDataset(store, "bucket", "index")

    layout = dataset.layout()

    assert layout.bits == 1
    assert layout.items == 5000
    assert layout.held_modalities == {"text"}
    assert not store.exists(legacy)
    assert store.exists(store.state_layout_path("bucket", "index"))
    read = {row["item_id"] for batch in dataset.batches(["item_id"]) for row in batch.to_pylist()}
    assert read == {e.item_id for e in entries}
    assert dataset.lookup().get("item-42") == entries[42]
    assert dataset.lookup().get("absent") is None
