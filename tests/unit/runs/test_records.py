"""`novaflow run --resume` takes up the newest run that was killed before its end."""

from __future__ import annotations

import os
from pathlib import Path

from tasks.runs.records import unfinished_run
from tasks.store import CheckpointStore


def _planned(store: CheckpointStore, run_id: str, at: int, finished: bool = False) -> None:
    totals = Path(store.plan_totals_path(run_id))
    totals.parent.mkdir(parents=True)
    totals.write_text("{}")
    os.utime(totals, (at, at))
    if finished:
        Path(store.summary_path(run_id)).write_text("{}")


def test_the_newest_planned_run_without_a_summary_is_resumed(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    _planned(store, "nightly-1", at=1_000)
    _planned(store, "nightly-2", at=3_000, finished=True)
    _planned(store, "backfill", at=2_000)
    Path(store.run_dir("half-planned")).mkdir()  # killed while planning: nothing to resume

    assert unfinished_run(store) == "backfill"


def test_a_store_whose_runs_all_finished_has_nothing_to_resume(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    assert unfinished_run(store) is None
    _planned(store, "nightly-1", at=1_000, finished=True)
    assert unfinished_run(store) is None
