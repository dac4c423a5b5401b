"""The backfill flow against the stand-in: partitions that together bring the index in line
with the corpus without touching what lies outside it, a second attempt that does nothing, a
failed partition that does not stop the others and reruns alone, and a new index that becomes
live only by an explicit switch after its evaluation."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient

from emulator.app import Emulator
from flows.backfill import BackfillParameters, backfill
from flows.reembed import ReembedParameters, reembed
from tasks.backfill.records import partition_run_id
from tasks.backfill.switch import read_active_index
from tasks.runs.lease import held_lease, lease_location
from tasks.settings import (
    EmbeddingSettings,
    EvaluationSettings,
    IndexSettings,
    NovaflowSettings,
    ThroughputSettings,
)
from tasks.state.dataset import StateDataset
from tasks.store import CheckpointStore

NOTES = 30


def _state_files(store: CheckpointStore, settings: NovaflowSettings) -> dict[str, bytes]:
    """Every file of an index's state, by path, with its bytes."""
    root = Path(store.state_dir(settings.index.vector_bucket, settings.index.index))
    return {str(path): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def _settings(tmp_path: Path, index: str, evaluate: bool = True, **extra: Any) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="flow-tests", index=index),
        throughput=ThroughputSettings(shard_size=5, concurrency=4, render_processes=1),
        evaluation=EvaluationSettings(enabled=evaluate, sample_size=20, dimensions=()),
        **extra,
    )


def _notes(directory: Path, count: int, prefix: str = "note") -> set[str]:
    """``count`` text files; returns the keys their chunks get."""
    directory.mkdir(parents=True)
    for n in range(count):
        (directory / f"{prefix}-{n:02d}.txt").write_text(f"{prefix} {n} about topic {n % 7}")
    return {f"{prefix}-{n:02d}.txt#chunk=0" for n in range(count)}


def _index_keys(client: BaseClient, settings: NovaflowSettings) -> list[str]:
    pages = client.get_paginator("list_vectors").paginate(
        vectorBucketName=settings.index.vector_bucket, indexName=settings.index.index
    )
    return [vector["key"] for page in pages for vector in page["vectors"]]


def _progress(key: str) -> list[float]:
    """The latest value of each progress artifact with ``key``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
        )
    return [float(artifact.data) for artifact in artifacts if artifact.type == "progress"]


def _calls(stand_in: Emulator, service: str, operation: str) -> int:
    return stand_in.stats()[service]["calls"].get(operation, 0)


def test_partitions_bring_the_index_in_line_and_a_second_attempt_does_nothing(
    aws_environment: Emulator, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, f"bf-{uuid.uuid4().hex[:10]}")
    # Items outside the backfill, already in the index: no partition may remove them.
    outside = _notes(tmp_path / "elsewhere", 3, prefix="kept")
    elsewhere = _settings(tmp_path, settings.index.index, evaluate=False)
    reembed(ReembedParameters(corpus=str(tmp_path / "elsewhere"), settings=elsewhere))
    corpus = _notes(tmp_path / "corpus", NOTES)
    aws_environment.reset_stats()
    params = BackfillParameters(
        backfill_id="bf-flow", corpus=str(tmp_path / "corpus"), partition_size=10,
        settings=settings,
    )  # fmt: skip

    summary = backfill(params)

    client = aws_environment.client("s3vectors")
    keys = _index_keys(client, settings)
    assert sorted(keys) == sorted(corpus | outside)  # the corpus, once each, and nothing lost
    assert (summary.partitions, summary.completed, summary.failed) == (3, (1, 2, 3), ())
    assert (summary.items, summary.embedded, summary.model_calls) == (NOTES, NOTES, NOTES)
    assert _calls(aws_environment, "bedrock-runtime", "InvokeModel") == NOTES
    assert _calls(aws_environment, "s3vectors", "DeleteVectors") == 0
    assert summary.evaluation is not None
    assert summary.evaluation.status == "passed"
    assert summary.done
    store = CheckpointStore(settings.store)
    assert store.exists(store.report_path("bf-flow", "report.json"))  # evaluated once, at the end
    assert not any(
        store.exists(store.report_path(partition_run_id("bf-flow", n), "report.json"))
        for n in (1, 2, 3)
    )
    state = StateDataset(store, settings.index.vector_bucket, settings.index.index)
    assert state.layout().items == NOTES + len(outside)
    assert _progress("novaflow-backfill-bf-flow") == [100.0]  # updated partition by partition
    aws_environment.reset_stats()

    again = backfill(params)

    assert (again.ran, again.already_done) == ((), (1, 2, 3))
    assert again.done
    assert _calls(aws_environment, "bedrock-runtime", "InvokeModel") == 0
    for operation in ("PutVectors", "DeleteVectors", "QueryVectors"):  # QueryVectors: no eval
        assert _calls(aws_environment, "s3vectors", operation) == 0


def test_a_failed_partition_is_recorded_the_others_go_on_and_it_reruns_alone(
    aws_environment: Emulator, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, f"bf-{uuid.uuid4().hex[:10]}")
    corpus = _notes(tmp_path / "corpus", NOTES)
    store = CheckpointStore(settings.store)
    params = BackfillParameters(
        backfill_id="bf-fail", corpus=str(tmp_path / "corpus"), partition_size=10,
        settings=settings,
    )  # fmt: skip
    second = partition_run_id("bf-fail", 2)
    # Another live process holds partition 2's run: that run is refused, naming it.
    with held_lease(lease_location(store, second), second):
        state = backfill(params, return_state=True)

    assert state.is_failed()
    assert "partition(s) [2] failed" in (state.message or "")
    assert "--partition 2" in (state.message or "")
    client = aws_environment.client("s3vectors")
    assert set(_index_keys(client, settings)) == {
        key for key in corpus if not key.startswith("note-1")
    }  # partitions 1 and 3 (notes 00–09 and 20–29) went on without 2
    assert not store.exists(store.report_path("bf-fail", "report.json"))  # not evaluated yet
    aws_environment.reset_stats()

    rerun = backfill(params.model_copy(update={"partitions": (2,)}))

    assert rerun.ran == (2,)
    assert rerun.completed == (1, 2, 3)
    assert rerun.done
    assert _calls(aws_environment, "bedrock-runtime", "InvokeModel") == 10  # partition 2 only
    assert sorted(_index_keys(client, settings)) == sorted(corpus)
    assert store.exists(store.report_path("bf-fail", "report.json"))


def test_a_new_index_is_built_beside_the_old_one_and_made_live_only_when_asked_and_passed(
    aws_environment: Emulator, tmp_path: Path
) -> None:
    old = _settings(tmp_path, f"old-{uuid.uuid4().hex[:10]}", evaluate=False)
    corpus = _notes(tmp_path / "corpus", 12)
    reembed(ReembedParameters(corpus=str(tmp_path / "corpus"), settings=old))
    store = CheckpointStore(old.store)
    old_state = _state_files(store, old)
    client = aws_environment.client("s3vectors")
    old_vectors = client.get_vectors(
        vectorBucketName=old.index.vector_bucket, indexName=old.index.index,
        keys=sorted(corpus), returnData=True,
    )["vectors"]  # fmt: skip
    new = _settings(
        tmp_path, f"new-{uuid.uuid4().hex[:10]}", evaluate=False,
        embedding=EmbeddingSettings(dimension=256),
    )  # fmt: skip
    params = BackfillParameters(
        backfill_id="bf-v2", corpus=str(tmp_path / "corpus"), partition_size=5, switch=True,
        settings=new,
    )  # fmt: skip

    refused = backfill(params, return_state=True)  # complete, but never evaluated

    assert refused.is_failed()
    assert "switch refused" in (refused.message or "")
    assert "evaluation is off" in (refused.message or "")
    assert read_active_index(store) is None

    evaluated = new.model_copy(update={"evaluation": _settings(tmp_path, "evaluated").evaluation})
    switched = backfill(params.model_copy(update={"settings": evaluated}))

    assert switched.ran == ()  # every partition was done: evaluated, then switched
    assert switched.evaluation is not None
    assert switched.evaluation.status == "passed"
    assert "is now the live index" in switched.switch
    pointer = read_active_index(store)
    assert pointer is not None
    assert (pointer.index, pointer.dimension, pointer.backfill_id) == (
        new.index.index,
        256,
        "bf-v2",
    )
    assert sorted(_index_keys(client, new)) == sorted(corpus)
    # the old index: the same state and the same vectors, never written
    assert _state_files(store, old) == old_state
    assert client.get_vectors(
        vectorBucketName=old.index.vector_bucket, indexName=old.index.index,
        keys=sorted(corpus), returnData=True,
    )["vectors"] == old_vectors  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"row_start": 5, "row_stop": 5}, "row_stop"),
        ({"modified_after": "2025-02-01", "modified_before": "2025-01-01"}, "later than"),
        ({"backfill_id": "x" * 57}, "string_pattern_mismatch"),
        ({"corpus": None}, "exactly one"),
    ],
)
def test_parameters_are_checked_before_any_work(
    changes: dict[str, Any], message: str, tmp_path: Path
) -> None:
    fields: dict[str, Any] = {"corpus": str(tmp_path), **changes}
    with pytest.raises(ValueError, match=message):
        BackfillParameters(**fields)
