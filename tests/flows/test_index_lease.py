"""One run at a time writes an index: two runs planned against the same state would each commit
it without the other's changes, so a second run on an index is refused before any work, naming
the run that writes it, and runs once that run has ended."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from emulator.app import Emulator
from flows.reembed import ReembedParameters, reembed
from tasks.runs.lease import LeaseHeldError, held_lease, index_lease_location
from tasks.settings import EvaluationSettings, IndexSettings, NovaflowSettings, ThroughputSettings
from tasks.store import CheckpointStore
from tests.flows.stand_in_reads import index_keys
from tests.flows.text_corpora import text_corpus

BUCKET = "flow-tests"


def test_a_run_on_an_index_another_run_writes_is_refused_then_runs_once_it_has_ended(
    aws_environment: Emulator, tmp_path: Path
) -> None:
    index = f"lease-{uuid.uuid4().hex[:12]}"
    settings = NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket=BUCKET, index=index),
        throughput=ThroughputSettings(shard_size=2, concurrency=2, render_processes=1),
        evaluation=EvaluationSettings(enabled=False),
    )
    manifest = text_corpus(tmp_path / "corpus", "lease", 3)
    store = CheckpointStore(settings.store)
    location = index_lease_location(store, BUCKET, index)
    refused = ReembedParameters(manifest=str(manifest), settings=settings)
    aws_environment.reset_stats()

    with held_lease(location, "the-writing-run"), pytest.raises(LeaseHeldError) as busy:
        reembed(refused)

    assert str(busy.value).startswith(
        f"index {BUCKET}/{index} is being written by run the-writing-run, host "
    )
    assert aws_environment.stats()["bedrock-runtime"]["calls"].get("InvokeModel", 0) == 0
    assert not store.exists(store.run_record_path(refused.run_id))  # nothing to resume later
    assert not store.exists(store.lease_path(refused.run_id))

    summary = reembed(ReembedParameters(manifest=str(manifest), settings=settings))

    assert summary.item_outcomes.embedded == 3
    assert len(index_keys(aws_environment.client("s3vectors"), settings)) == 3
    assert not Path(location).exists()  # released with the run
