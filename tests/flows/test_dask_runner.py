"""The Dask task runner: on a local cluster of 2 worker processes the demo corpus ends in exactly
the checkpoints and index the thread runner makes, and the shared request budget holds across
the workers (global limits have been reported not to hold under Dask: here they are measured)."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.client import BaseClient
from distributed import Client, LocalCluster

from emulator.app import Emulator
from flows.reembed import ReembedParameters, local_dask_cluster, reembed_flow
from tasks.demo.corpus import DemoCorpus, generate_demo_corpus
from tasks.embed.stage import process_pacer
from tasks.global_limits import shared_request_pacer
from tasks.report.summary import RunSummary
from tasks.settings import (
    EmbeddingSettings,
    EvaluationSettings,
    IndexSettings,
    NovaflowSettings,
    ThroughputSettings,
)
from tasks.store import CheckpointStore
from tests.flows.conftest import QUOTA
from tests.flows.text_corpora import text_corpus

pytestmark = pytest.mark.slow


def _settings(tmp_path: Path, tag: str, throughput: ThroughputSettings) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / tag / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="dask-tests", index=f"i-{uuid.uuid4().hex[:12]}"),
        throughput=throughput,
        evaluation=EvaluationSettings(enabled=False),
    )


def _checkpoint_rows(settings: NovaflowSettings, run_id: str) -> list[dict[str, Any]]:
    """Every embedding the run checkpointed (shard and async job files), sorted by key."""
    folder = Path(CheckpointStore(settings.store).embeddings_dir(run_id))
    tables = [pq.read_table(path) for path in sorted(folder.glob("*.parquet"))]
    rows = pa.concat_tables(tables).to_pylist()
    return sorted(rows, key=lambda row: row["key"])


def _index_contents(client: BaseClient, settings: NovaflowSettings) -> dict[str, Any]:
    """The index's vectors and metadata by key, as S3 Vectors returns them."""
    pages = client.get_paginator("list_vectors").paginate(
        vectorBucketName=settings.index.vector_bucket,
        indexName=settings.index.index,
        returnData=True,
        returnMetadata=True,
    )
    return {
        vector["key"]: (vector["data"]["float32"], vector.get("metadata"))
        for page in pages
        for vector in page["vectors"]
    }


def _pacer_lookups() -> int:
    """How often a shard embedded in this process asked for the process's pacer."""
    info = process_pacer.cache_info()
    return info.hits + info.misses


def _failures(settings: NovaflowSettings, run_id: str) -> list[tuple[Any, ...]]:
    store = CheckpointStore(settings.store)
    rows = store.read_table(store.failures_path(run_id)).to_pylist()
    return sorted((r["item_id"], r["unit_key"], r["stage"], r["code"]) for r in rows)


def test_the_dask_runner_on_two_local_workers_writes_what_the_thread_runner_writes(
    aws_environment: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    corpus: DemoCorpus = generate_demo_corpus(tmp_path / "corpus")
    throughput = ThroughputSettings(shard_size=8, concurrency=4, render_processes=1)
    on_threads = _settings(tmp_path, "threads", throughput)
    on_dask = _settings(
        tmp_path, "dask", throughput.model_copy(update={"task_runner": "dask", "dask_workers": 2})
    )

    def run(settings: NovaflowSettings) -> RunSummary:
        params = ReembedParameters(
            manifest=str(corpus.manifest), root=str(corpus.root), settings=settings
        )
        return reembed_flow(settings)(params)

    threads = run(on_threads)
    paced_here = _pacer_lookups()
    dask = run(on_dask)

    assert _pacer_lookups() == paced_here  # every shard was embedded in a worker process
    assert threads.adds_up
    assert dask.adds_up
    assert dask.shards == threads.shards > 2  # enough shards to spread over both workers
    assert (dask.units_embedded, dask.async_segments_embedded) == (
        threads.units_embedded,
        threads.async_segments_embedded,
    )
    assert _checkpoint_rows(on_dask, dask.run_id) == _checkpoint_rows(on_threads, threads.run_id)
    assert _failures(on_dask, dask.run_id) == _failures(on_threads, threads.run_id)
    s3vectors = aws_environment.client("s3vectors")
    index = _index_contents(s3vectors, on_dask)
    assert index == _index_contents(s3vectors, on_threads)
    assert len(index) == dask.units_embedded + dask.async_segments_embedded
    # The local cluster's scratch space (and every other temporary file) is gone with it.
    assert list(temporary.iterdir()) == []


@pytest.fixture
def cluster(aws_environment: Emulator) -> Iterator[LocalCluster]:
    """Two local worker processes, started once the AWS variables point at the stand-in."""
    with local_dask_cluster(n_workers=2, threads_per_worker=3) as running:
        yield running


def test_the_shared_budget_holds_across_dask_workers(
    quota: Emulator, cluster: LocalCluster, tmp_path: Path
) -> None:
    aws_environment = quota
    units = 60
    manifest = text_corpus(tmp_path / "corpus", "dask", units)
    # Each worker alone may go at the whole quota; together, without the shared budget, twice it.
    throughput = ThroughputSettings(
        shard_size=6,
        concurrency=4,
        requests_per_second=QUOTA,
        render_processes=1,
        shared_rate_limit_name=f"novaflow-test-{uuid.uuid4().hex[:8]}",
        shared_requests_per_second=QUOTA,
        task_runner="dask",
        dask_address=cluster.scheduler_address,
        dask_workers=2,
    )
    settings = _settings(tmp_path, "shared", throughput).model_copy(
        update={"embedding": EmbeddingSettings(dimension=256)}
    )

    summary = reembed_flow(settings)(
        ReembedParameters(manifest=str(manifest), root=str(manifest.parent), settings=settings)
    )

    stats = aws_environment.stats()["bedrock-runtime"]
    calls = stats["calls"].get("InvokeModel", 0)
    throttled = stats["errors"].get("InvokeModel", {}).get("ThrottlingException", 0)
    assert summary.adds_up
    assert summary.units_embedded == units
    assert throttled == 0
    assert calls == units

    def spent_in_this_worker() -> int:
        pacer = shared_request_pacer(throughput)
        return pacer.budget.counters.spent if pacer else 0

    with Client(cluster) as client:
        spent = client.run(spent_in_this_worker)
    # Both workers embedded, and every call either made was paid from the shared budget.
    assert len(spent) == 2
    assert all(spent.values())
    assert sum(spent.values()) == calls
