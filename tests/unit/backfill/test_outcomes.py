"""Partition outcomes decide what a resumed backfill runs; the summary adds them up; the switch
is made only for a complete, evaluated backfill."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.backfill.outcomes import (
    EvaluationOutcome,
    needs_evaluation,
    partitions_to_run,
    recorded_partition_outcome,
)
from tasks.backfill.partitions import PartitionSet
from tasks.backfill.summary import BackfillSummary, backfill_summary, summary_lines
from tasks.backfill.switch import (
    following_switch,
    read_active_index,
    switch_refusal,
    switched_index,
)
from tasks.settings import EmbeddingSettings, IndexSettings, NovaflowSettings
from tasks.store import CheckpointStore

ROWS = PartitionSet(
    partitions=3, partition_size=10, rows_read=30, rows_selected=30, rows_outside_dates=0,
    rows_rejected=0, rows_partitioned=30, rows_undated=0,
)  # fmt: skip


def _run_summary(store: CheckpointStore, run_id: str, embedded: int, calls: int) -> None:
    document: dict[str, Any] = {
        "item_outcomes": {
            "planned": embedded + 1, "embedded": embedded, "unchanged": 1, "quarantined": 0,
            "failed": 0, "rows_rejected": 2,
        },
        "units_embedded": embedded, "units_quarantined": 0, "async_segments_embedded": 0,
        "model_calls": calls, "vectors_written": embedded, "keys_deleted": 0,
        "estimated_cost_usd": 0.001, "wall_seconds": 1.5,
    }  # fmt: skip
    path = Path(store.summary_path(run_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def test_a_resumed_backfill_runs_the_partitions_not_completed(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    _run_summary(store, "bf-p00001", embedded=9, calls=9)
    recorded_partition_outcome(store, "bf", 1, "bf-p00001", None)
    recorded_partition_outcome(store, "bf", 2, "bf-p00002", "shard 1 failed")

    assert partitions_to_run(store, "bf", 3) == [2, 3]  # failed, and never ended
    assert partitions_to_run(store, "bf", 3, only=(1,)) == [1]  # named: run, done or not
    with pytest.raises(ValueError, match=r"no partition \[4\]"):
        partitions_to_run(store, "bf", 3, only=(4,))


def test_the_summary_adds_up_the_partitions_and_names_the_failed_ones(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    for number, embedded in ((1, 9), (3, 4)):
        _run_summary(store, f"bf-p0000{number}", embedded=embedded, calls=embedded + 1)
        recorded_partition_outcome(store, "bf", number, f"bf-p0000{number}", None)
    failed = recorded_partition_outcome(store, "bf", 2, "bf-p00002", "lease held")
    assert (failed.status, failed.items, failed.message) == ("failed", 0, "lease held")

    summary = backfill_summary(store, "bf", ROWS, (2, 3), (1,), None, "not asked", 3.2)

    assert (summary.completed, summary.failed, summary.pending) == ((1, 3), (2,), ())
    assert (summary.items, summary.embedded, summary.unchanged) == (15, 13, 2)
    assert (summary.model_calls, summary.rows_rejected) == (15, 4)
    assert not summary.partitions_done
    assert not summary.done
    lines = summary_lines(summary)
    assert "  parts    2 completed, 1 failed, 0 pending of 3 partitions" in lines[1]
    assert lines[-1].endswith("novaflow backfill --backfill-id bf --partition 2")
    stored = BackfillSummary.from_json(Path(store.backfill_summary_path("bf")).read_text())
    assert stored == summary


def test_a_passed_evaluation_is_not_repeated_unless_the_index_changed() -> None:
    passed, failed = EvaluationOutcome("passed"), EvaluationOutcome("failed", "recall 0.5")
    skipped = EvaluationOutcome("skipped")
    assert not needs_evaluation(False, passed, True)
    assert needs_evaluation(True, passed, True)
    assert needs_evaluation(False, None, True)
    assert needs_evaluation(False, failed, True)
    assert not needs_evaluation(False, skipped, False)
    assert needs_evaluation(False, skipped, True)


def test_the_switch_needs_every_partition_and_a_passed_evaluation() -> None:
    passed = EvaluationOutcome("passed")
    assert switch_refusal(True, passed, True) is None
    assert "unfinished or failed" in (switch_refusal(False, passed, True) or "")
    assert "evaluation is off" in (switch_refusal(True, None, False) or "")
    failed = EvaluationOutcome("failed", "index_recall@10 0.5 < 0.9")
    assert "index_recall@10 0.5 < 0.9" in (switch_refusal(True, failed, True) or "")
    assert "not run" in (switch_refusal(True, None, True) or "")


def test_the_switch_points_at_the_new_index_and_keeps_the_old_pointer(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    assert read_active_index(store) is None
    old = NovaflowSettings(index=IndexSettings(index="corpus"))
    new = NovaflowSettings(
        index=IndexSettings(index="corpus-v2"), embedding=EmbeddingSettings(dimension=3072)
    )
    switched_index(store, old, "bf-old", "reports/bf-old/report.html")

    pointer, changed = switched_index(store, new, "bf-new", "reports/bf-new/report.html")

    assert changed
    assert read_active_index(store) == pointer
    assert (pointer.index, pointer.dimension, pointer.backfill_id) == ("corpus-v2", 3072, "bf-new")
    assert pointer.config_hash == new.embedding.config_hash()
    assert pointer.previous is not None
    assert pointer.previous["index"] == "corpus"
    assert pointer.names(new)
    assert not pointer.names(old)
    assert switched_index(store, new, "bf-again", "") == (pointer, False)


def test_settings_follow_the_switch_to_the_live_index_and_its_embedding(tmp_path: Path) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    new = NovaflowSettings(
        index=IndexSettings(vector_bucket="vectors-b", index="corpus-v2"),
        embedding=EmbeddingSettings(dimension=3072),
    )
    pointer, _ = switched_index(store, new, "bf-new", "")

    followed = following_switch(NovaflowSettings(store="elsewhere"), pointer)

    assert (followed.index.vector_bucket, followed.index.index) == ("vectors-b", "corpus-v2")
    assert followed.embedding == new.embedding
    assert followed.store == "elsewhere"
    assert following_switch(followed, None) == followed  # no switch made: nothing changes
