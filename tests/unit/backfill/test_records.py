"""A backfill's record: written once, resumable from anywhere, refusing another backfill's
parameters under its id; and the partition record that makes a partition's run partial."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tasks.backfill.records import (
    BackfillMismatchError,
    new_backfill_record,
    partition_run_id,
    partition_settings,
    read_backfill_record,
    record_partition_run,
    recorded_backfill,
)
from tasks.settings import IndexSettings, NovaflowSettings, ThroughputSettings
from tasks.store import CheckpointStore


def _record(backfill_id: str = "bf-1", **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "manifest": "corpus.jsonl", "corpus": None, "root": None, "row_start": 0,
        "row_stop": None, "modified_after": None, "modified_before": None,
        "partition_size": 10, "settings": NovaflowSettings(),
    }  # fmt: skip
    fields.update(changes)
    return new_backfill_record(backfill_id, **fields)


def test_local_sources_are_recorded_absolute_with_the_root_their_runs_resolve_against(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    by_manifest = _record(manifest="lists/corpus.jsonl")
    assert by_manifest.manifest == str(tmp_path / "lists" / "corpus.jsonl")
    assert by_manifest.root == str(tmp_path / "lists")
    crawl = _record(manifest=None, corpus="docs", root=None)
    assert (crawl.corpus, crawl.root) == (str(tmp_path / "docs"), str(tmp_path / "docs"))
    on_s3 = _record(manifest="s3://bucket/lists/corpus.jsonl")
    assert on_s3.root == "s3://bucket/lists/"
    with pytest.raises(ValueError, match="exactly one"):
        _record(corpus="docs")


def test_the_first_record_is_kept_and_another_source_or_target_is_refused(
    tmp_path: Path,
) -> None:
    store = CheckpointStore(str(tmp_path / "store"))
    first = recorded_backfill(store, _record())
    slower = NovaflowSettings(throughput=ThroughputSettings(concurrency=1))
    assert recorded_backfill(store, _record(settings=slower)) == first  # throughput may change
    assert read_backfill_record(store, "bf-1") == first

    with pytest.raises(BackfillMismatchError, match=r"partition_size: 10 → 20"):
        recorded_backfill(store, _record(partition_size=20))
    with pytest.raises(BackfillMismatchError, match=r"index: 'corpus' → 'corpus-v2'"):
        recorded_backfill(
            store, _record(settings=NovaflowSettings(index=IndexSettings(index="corpus-v2")))
        )
    wider = NovaflowSettings.model_validate({"embedding": {"dimension": 3072}})
    with pytest.raises(BackfillMismatchError, match="embedding settings"):
        recorded_backfill(store, _record(settings=wider))
    assert read_backfill_record(store, "missing") is None


def test_partitions_run_without_evaluation_under_a_run_id_of_their_own(tmp_path: Path) -> None:
    settings = NovaflowSettings()
    assert partition_settings(settings).evaluation.enabled is False
    assert partition_settings(settings).index == settings.index
    assert partition_run_id("bf-1", 3) == "bf-1-p00003"

    store = CheckpointStore(str(tmp_path / "store"))
    run_id = record_partition_run(store, "bf-1", 3, "/m/part-00003.parquet")
    assert run_id == "bf-1-p00003"
    marker = json.loads(Path(store.partition_record_path(run_id)).read_text())
    assert marker == {"backfill_id": "bf-1", "partition": 3, "manifest": "/m/part-00003.parquet"}
