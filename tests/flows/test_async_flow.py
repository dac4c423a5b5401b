"""Long audio, video and text through the flow's async jobs, against a stand-in that misbehaves:
every unit ends embedded or quarantined with its reason, and the index follows the files."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest
from botocore.client import BaseClient

from emulator.app import Emulator
from emulator.misbehaviour import AsyncJobBehaviour, Misbehaviour
from flows.reembed import ReembedParameters, reembed
from tasks.demo.sample_media import sample_audio, sample_video
from tasks.job_ledger import JobLedger
from tasks.report.summary import RunSummary
from tasks.settings import (
    AsyncJobSettings,
    EmbeddingSettings,
    IndexSettings,
    NovaflowSettings,
    ThroughputSettings,
)
from tasks.store import CheckpointStore
from tests.flows.stand_in_reads import index_keys

SEGMENT_SECONDS = 15
MISBEHAVING_RUN_ID = "misbehaving-2"
FAST_POLLING = AsyncJobSettings(
    staging_uri="s3://flow-async/staging",
    output_uri="s3://flow-async/output",
    max_jobs_in_flight=2,
    max_attempts=2,
    poll_initial_seconds=0.05,
    poll_multiplier=1.5,
    poll_max_seconds=0.4,
    status_calls_per_second=200.0,
)


def _settings(tmp_path: Path) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="local",  # creates the staging and output buckets in the stand-in's S3
        index=IndexSettings(vector_bucket="flow-tests", index=f"a-{uuid.uuid4().hex[:12]}"),
        throughput=ThroughputSettings(shard_size=8, concurrency=4, render_processes=1),
        embedding=EmbeddingSettings(
            segment_seconds=SEGMENT_SECONDS,
            async_text_over_chars=10_000,
            async_text_segment_chars=4_000,
        ),
        async_jobs=FAST_POLLING,
    )


def _write_manifest(corpus: Path) -> Path:
    rows = [{"uri": path.name, "id": path.stem} for path in sorted(corpus.iterdir())]
    manifest = corpus / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def _run(corpus: Path, settings: NovaflowSettings, **extra: str) -> RunSummary:
    manifest = _write_manifest(corpus)
    params = ReembedParameters(manifest=str(manifest), root=str(corpus), settings=settings, **extra)
    return reembed(params)


def _embedded_keys(store: CheckpointStore, run_id: str) -> set[str]:
    keys: set[str] = set()
    for path in store.list_files(store.embeddings_dir(run_id)):
        keys.update(store.read_table(path).column("key").to_pylist())
    return keys


def _job_count(stand_in: Emulator) -> int:
    client = stand_in.client("bedrock-runtime")
    pages = client.get_paginator("list_async_invokes").paginate()
    return sum(len(page.get("asyncInvokeSummaries", [])) for page in pages)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for number, seconds in enumerate((35.0, 50.0, 65.0), start=1):
        (folder / f"talk-{number}.mp4").write_bytes(sample_video(number, seconds, "mp4"))
    for number, seconds in enumerate((40.0, 75.0), start=1):
        (folder / f"recording-{number}.wav").write_bytes(sample_audio(10 + number, seconds, "wav"))
    words = " ".join(f"word{n % 97} about bread and rivers" for n in range(2_400))
    (folder / "essay.txt").write_text(words)  # ~70,000 characters: an async text job
    (folder / "note.txt").write_text("a short note, embedded synchronously")
    return folder


def test_misbehaving_jobs_end_embedded_or_quarantined_and_the_counts_add_up(
    stand_in: Emulator, corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    stand_in.configure(
        bedrock_faults=(
            Misbehaviour(operations=frozenset({"GetAsyncInvoke"}), throttle_rate=0.3, seed=3),
        ),
        async_jobs=AsyncJobBehaviour(
            seed=5,
            job_seconds=0.1,
            seconds_per_media_minute=0.2,  # longer files make slower jobs
            failure_rate=0.5,
            partial_rate=0.5,
            segment_failure_rate=0.3,
        ),
    )
    jobs_before = _job_count(stand_in)
    settings = _settings(tmp_path)
    # The stand-in draws each job's fate from its token, which the run id is part of: a fixed
    # id makes the same jobs fail, the same segments fail, every time.
    summary = _run(corpus, settings, run_id=MISBEHAVING_RUN_ID)

    assert summary.adds_up
    assert summary.async_jobs == 6  # three videos, two recordings, the essay
    assert summary.async_jobs_collected + summary.async_jobs_quarantined == 6
    assert summary.units_planned == summary.units_embedded == 1  # the short note
    # the misbehaviour happened, and was absorbed
    assert summary.async_resubmissions > 0
    assert summary.async_jobs_quarantined > 0  # failed both attempts
    assert summary.async_status_throttles > 0
    assert summary.async_segments_quarantined > 0
    assert _job_count(stand_in) - jobs_before == summary.async_submissions

    store = CheckpointStore(settings.store)
    ledger = JobLedger(store, summary.run_id)
    latest = ledger.latest_by_unit()
    assert {record.status for record in latest.values()} <= {"collected", "quarantined"}
    assert sum(r.throttled_calls for r in ledger.records()) == summary.async_status_throttles
    failures = store.read_table(store.failures_path(summary.run_id)).to_pylist()
    quarantined_jobs = [r for r in failures if r["unit_key"] in latest]
    assert len(quarantined_jobs) == summary.async_jobs_quarantined
    for row in quarantined_jobs:
        assert row["code"] == "job_failed"
        assert "internal error" in row["message"]
        assert row["attempts"] == FAST_POLLING.max_attempts
    segment_failures = [r for r in failures if r["unit_key"] not in latest]
    assert len(segment_failures) == summary.async_segments_quarantined
    assert {r["code"] for r in segment_failures} == {"INTERNAL_SERVER_EXCEPTION"}
    assert all(r["message"].startswith("segment ") for r in segment_failures)

    # each collected job accounts for every segment of its file, embedded or quarantined
    durations = {"talk-1": 35, "talk-2": 50, "talk-3": 65, "recording-1": 40, "recording-2": 75}
    for item_id, record in latest.items():
        if record.status == "collected" and item_id in durations:
            expected = math.ceil(durations[item_id] / SEGMENT_SECONDS)
            assert record.segments_embedded + record.segments_quarantined == expected
    # the index holds exactly what was embedded
    held = index_keys(stand_in.client("s3vectors"), settings)
    assert held == _embedded_keys(store, summary.run_id)
    assert summary.vectors_written == len(held)


def test_a_changed_file_replaces_all_its_segments_and_a_shorter_one_drops_the_extras(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path).model_copy(update={"backend": "local"})
    first = _run(corpus, settings)
    assert first.adds_up
    assert first.async_jobs_collected == first.async_jobs == 6
    client = aws_environment.client("s3vectors")
    keys = index_keys(client, settings)
    talk_keys = {key for key in keys if key.startswith("talk-3#")}
    assert talk_keys == {f"talk-3#t={s:.1f}-{min(s + 15, 65):.1f}" for s in range(0, 65, 15)}
    old_vector = _vector(client, settings, "talk-3#t=0.0-15.0")

    # talk-3 becomes a different, shorter video: 40 s instead of 65 s
    (corpus / "talk-3.mp4").write_bytes(sample_video(99, 40.0, "mp4"))
    second = _run(corpus, settings)

    assert second.adds_up
    assert second.items["changed"] == 1
    assert second.async_jobs == second.async_jobs_collected == 1
    keys = index_keys(client, settings)
    assert {key for key in keys if key.startswith("talk-3#")} == {
        "talk-3#t=0.0-15.0",
        "talk-3#t=15.0-30.0",
        "talk-3#t=30.0-40.0",
    }
    assert second.keys_deleted == 3  # 30-45, 45-60, 60-65 of the old version
    assert _vector(client, settings, "talk-3#t=0.0-15.0") != old_vector
    # nothing else moved, and a third run has nothing to do
    assert {key for key in keys if not key.startswith("talk-3#")} == {
        key for key in index_keys(client, settings) if not key.startswith("talk-3#")
    }
    third = _run(corpus, settings)
    assert (third.async_jobs, third.model_calls, third.vectors_written) == (0, 0, 0)


def _vector(client: BaseClient, settings: NovaflowSettings, key: str) -> list[float]:
    answer = client.get_vectors(
        vectorBucketName=settings.index.vector_bucket,
        indexName=settings.index.index,
        keys=[key],
        returnData=True,
    )
    return answer["vectors"][0]["data"]["float32"]


def test_a_missing_staging_bucket_on_aws_stops_the_jobs_at_once_and_names_it(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    bucket = f"missing-{uuid.uuid4().hex[:12]}"
    base = _settings(tmp_path)
    settings = base.model_copy(
        update={
            "backend": "aws",  # the user's buckets: never created behind their back
            "async_jobs": FAST_POLLING.model_copy(update={"staging_uri": f"s3://{bucket}/in"}),
        }
    )
    jobs_before = _job_count(aws_environment)
    params = ReembedParameters(
        manifest=str(_write_manifest(corpus)),
        root=str(corpus),
        settings=settings,
        run_id="nobucket",
    )
    with pytest.raises(RuntimeError, match="async jobs stage failed"):
        reembed(params)

    assert _job_count(aws_environment) == jobs_before
    store = CheckpointStore(settings.store)
    summary = json.loads(store.read_text(store.summary_path("nobucket")))
    assert summary["adds_up"] is True  # the short note still made it, the jobs are accounted for
    assert summary["units_embedded"] == 1
    assert (summary["async_jobs"], summary["async_jobs_quarantined"]) == (6, 6)
    failures = store.read_table(store.failures_path("nobucket")).to_pylist()
    assert len(failures) == 6
    for row in failures:
        assert row["code"] == "async_stage_failed"
        assert bucket in row["message"]
        assert "NOVAFLOW_ASYNC_JOBS__STAGING_URI" in row["message"]
