"""A partition's run covers part of the corpus: what it does not list is not removed from the
index, however the run is started or resumed."""

from __future__ import annotations

from pathlib import Path

from tasks.plan.stage import planned_run
from tasks.records import Item
from tasks.settings import NovaflowSettings
from tasks.state.dataset import StateDataset, StateEntry, entries_table
from tasks.store import CheckpointStore


def _held(settings: NovaflowSettings, item_id: str) -> StateEntry:
    return StateEntry(
        item_id=item_id,
        uri=f"/corpus/{item_id}",
        fingerprint=f"sha256:{item_id}",
        config_hash=settings.embedding.config_hash(),
        keys=(f"{item_id}#chunk=0",),
        modality="text",
    )


def _plan(tmp_path: Path, run_id: str, partition_record: bool) -> dict[str, int]:
    settings = NovaflowSettings(store=str(tmp_path / "store"))
    store = CheckpointStore(settings.store)
    index = settings.index
    StateDataset(store, index.vector_bucket, index.index).replaced(
        entries_table([_held(settings, "a"), _held(settings, "b")]), run_id="earlier"
    )
    if partition_record:
        store.write_text(store.partition_record_path(run_id), "{}")
    # the partition lists "a" only, unchanged
    unchanged = Item("a", "/corpus/a", "text", "sha256:a", 10)
    return planned_run(settings, lambda: [unchanged], run_id).items


def test_a_partition_run_plans_no_removal_of_items_outside_it(tmp_path: Path) -> None:
    assert _plan(tmp_path, "bf-p00001", partition_record=True) == {
        "new": 0, "changed": 0, "unchanged": 1, "removed": 0,
    }  # fmt: skip


def test_an_ordinary_run_still_removes_what_its_corpus_no_longer_has(tmp_path: Path) -> None:
    assert _plan(tmp_path, "nightly", partition_record=False)["removed"] == 1
