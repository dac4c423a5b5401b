"""How far a run has got, read from its checkpoints: any process can watch any run this way,
whether the run is in this process, another one or a deployment's worker."""

from __future__ import annotations

import json
from dataclasses import dataclass

from tasks.store import CheckpointStore


@dataclass(frozen=True)
class RunProgress:
    """Shards finished out of the plan's shards (``total`` is None until the plan is written),
    and whether the run has written its summary (ended)."""

    shards_done: int
    shards_total: int | None
    ended: bool


def run_progress(store: CheckpointStore, run_id: str) -> RunProgress:
    """The progress of ``run_id`` as its checkpoints show it now."""
    total = None
    if store.exists(store.plan_totals_path(run_id)):
        total = int(json.loads(store.read_text(store.plan_totals_path(run_id)))["shards"])
    done = sum(
        1
        for path in store.list_files(store.outcomes_dir(run_id), suffix=".json")
        if path.rsplit("/", 1)[-1].startswith("shard-")
    )
    return RunProgress(done, total, store.exists(store.summary_path(run_id)))
