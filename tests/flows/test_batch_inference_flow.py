"""Backfills through Bedrock batch inference against the stand-in: the same checkpoints and the
same index as the same backfill through InvokeModel, jobs within the limits, the shards too few
for a job embedded on demand, and refused records quarantined with the service's message."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pymupdf
import pytest

from emulator.app import Emulator
from emulator.bedrock.limits import BatchLimits
from emulator.misbehaviour import BatchJobBehaviour
from flows.backfill import BackfillParameters, backfill
from tasks.backfill.records import partition_run_id
from tasks.batch.ledger import BatchLedger
from tasks.demo import sample_media
from tasks.settings import (
    BatchInferenceSettings,
    EvaluationSettings,
    IndexSettings,
    NovaflowSettings,
    ThroughputSettings,
)
from tasks.store import CheckpointStore
from tests.flows.stand_in_reads import calls

QUICK_JOBS = BatchJobBehaviour(phase_seconds=0.05, queue_seconds=0.05, job_seconds=0.2)
# Small limits, so that a corpus of a few dozen units needs several jobs and leaves a tail.
LIMITS = BatchLimits(min_records_per_job=8, max_records_per_file=20, max_records_per_job=20)


@pytest.fixture
def batch_stand_in(aws_environment: Emulator) -> Iterator[Emulator]:
    """The stand-in with quick batch jobs and the small limits; the defaults put back after."""
    aws_environment.configure(batch_jobs=QUICK_JOBS, batch_limits=LIMITS)
    yield aws_environment
    aws_environment.configure(batch_jobs=BatchJobBehaviour(), batch_limits=BatchLimits())


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """34 notes, a two-page PDF, an image and a file no model can take: a bad PNG."""
    root = tmp_path / "corpus"
    root.mkdir()
    for n in range(34):
        (root / f"note-{n:02d}.txt").write_text(f"note {n} about topic {n % 7}")
    document = pymupdf.open()
    for text in ("the harbour at dawn", "the lighthouse at dusk"):
        document.new_page().insert_text((72, 72), text)
    document.save(str(root / "guide.pdf"))
    document.close()
    (root / "tile.png").write_bytes(sample_media.sample_image(8, "png"))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    return root


def _settings(tmp_path: Path, name: str, batch: bool) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / f"store-{name}"),
        backend="aws",
        index=IndexSettings(vector_bucket="flow-tests", index=f"{name}-{uuid.uuid4().hex[:8]}"),
        throughput=ThroughputSettings(shard_size=6, concurrency=4, render_processes=1),
        evaluation=EvaluationSettings(enabled=False),
        batch_inference=BatchInferenceSettings(
            enabled=batch,
            role_arn="arn:aws:iam::123456789012:role/novaflow-batch",
            min_records_per_job=LIMITS.min_records_per_job,
            max_records_per_job=LIMITS.max_records_per_job,
            max_records_per_file=LIMITS.max_records_per_file,
            poll_initial_seconds=0.2,
            poll_max_seconds=0.5,
        ),
    )


def _backfill(corpus: Path, settings: NovaflowSettings) -> Any:
    return backfill(BackfillParameters(corpus=str(corpus), partition_size=24, settings=settings))


def _checkpoints(settings: NovaflowSettings) -> dict[str, tuple[Any, ...]]:
    """Every checkpointed vector of the store, by key: type, vector, metadata, config."""
    table = ds.dataset(f"{settings.store}/embeddings", format="parquet").to_table()
    return {
        row["key"]: (row["embedding_type"], row["embedding"], row["metadata_json"],
                     row["config_hash"])
        for row in table.to_pylist()
    }  # fmt: skip


def _index(stand_in: Emulator, settings: NovaflowSettings) -> dict[str, tuple[Any, ...]]:
    client = stand_in.client("s3vectors")
    pages = client.get_paginator("list_vectors").paginate(
        vectorBucketName=settings.index.vector_bucket, indexName=settings.index.index,
        returnData=True, returnMetadata=True,
    )  # fmt: skip
    return {
        vector["key"]: (vector["data"]["float32"], vector["metadata"])
        for page in pages
        for vector in page["vectors"]
    }


def _failures(settings: NovaflowSettings) -> dict[str, str]:
    table = ds.dataset(f"{settings.store}/failures", format="parquet").to_table()
    return {row["unit_key"] or row["item_id"]: row["code"] for row in table.to_pylist()}


def test_a_batch_backfill_writes_the_same_checkpoints_and_index_as_invoke_model(
    batch_stand_in: Emulator, corpus: Path, tmp_path: Path
) -> None:
    on_demand = _settings(tmp_path, "invoke", batch=False)
    expected = _backfill(corpus, on_demand)
    invoke_calls = calls(batch_stand_in, "bedrock-runtime", "InvokeModel")
    batch_stand_in.reset_stats()

    batched = _settings(tmp_path, "batch", batch=True)
    summary = _backfill(corpus, batched)

    assert (summary.completed, summary.failed) == ((1, 2), ())
    counted = ("items", "embedded", "quarantined", "units_embedded", "units_quarantined")
    assert [getattr(summary, name) for name in counted] == [
        getattr(expected, name) for name in counted
    ]
    assert _checkpoints(batched) == _checkpoints(on_demand)
    assert _index(batch_stand_in, batched) == _index(batch_stand_in, on_demand)
    assert _failures(batched) == _failures(on_demand)
    assert "broken.png" in _failures(batched)
    # Two partitions of 24 and 14 items; 6 units a shard; jobs of at most 20 records, at least 8:
    # partition 1 (shards of 6, 6, 6, 6, 1 units) → jobs of 18 records + 7 left on demand.
    jobs = calls(batch_stand_in, "bedrock", "CreateModelInvocationJob")
    assert jobs >= 2
    store = CheckpointStore(batched.store)
    for partition in (1, 2):
        ledger = BatchLedger(store, partition_run_id(summary.backfill_id, partition))
        for job in ledger.jobs():
            assert job.status == "collected"
            assert LIMITS.min_records_per_job <= job.records <= LIMITS.max_records_per_job
    assert 0 < calls(batch_stand_in, "bedrock-runtime", "InvokeModel") < invoke_calls
