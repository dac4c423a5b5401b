"""The re-embedding flow end to end against the stand-in: what a nightly run promises its users
— only what changed is embedded, the index mirrors the corpus, nothing is lost."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from emulator.app import Emulator
from flows.reembed import ReembedParameters, reembed
from tasks.demo.corpus import DemoCorpus, change_demo_corpus, generate_demo_corpus
from tasks.report.summary import RunSummary
from tasks.settings import IndexSettings, NovaflowSettings, ThroughputSettings
from tasks.store import CheckpointStore
from tests.flows.stand_in_reads import calls, index_keys


def _settings(tmp_path: Path) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="flow-tests", index=f"i-{uuid.uuid4().hex[:12]}"),
        throughput=ThroughputSettings(shard_size=8, concurrency=4, render_processes=1),
    )


def _run(corpus: DemoCorpus, settings: NovaflowSettings, **extra: Any) -> RunSummary:
    params = ReembedParameters(
        manifest=str(corpus.manifest), root=str(corpus.root), settings=settings, **extra
    )
    return reembed(params)


@pytest.fixture
def corpus(tmp_path: Path) -> DemoCorpus:
    return generate_demo_corpus(tmp_path / "corpus")


def test_first_run_embeds_every_good_unit_and_quarantines_every_bad_one(
    aws_environment: Emulator, corpus: DemoCorpus, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    summary = _run(corpus, settings)

    assert summary.adds_up
    assert summary.units_embedded == summary.units_planned - summary.units_quarantined
    assert summary.items["new"] >= corpus.good_files
    # the long recording and video went through async jobs: 7 and 5 segments of 15 s
    assert (summary.async_jobs_collected, summary.async_segments_embedded) == (2, 12)
    vectors = summary.units_embedded + summary.async_segments_embedded
    assert summary.vectors_written == vectors
    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == summary.model_calls
    keys = index_keys(aws_environment.client("s3vectors"), settings)
    assert len(keys) == vectors
    assert "pdf/river-ecology#page=1" in keys
    assert "video/talk-long#t=60.0-75.0" in keys
    # every broken file of the demo ends in the failures file with a reason
    store = CheckpointStore(settings.store)
    failures = store.read_table(store.failures_path(summary.run_id)).to_pylist()
    codes = {row["code"] for row in failures}
    assert {
        "pdf_encrypted",
        "pdf_corrupt",
        "image_truncated",
        "empty_file",
        "not_found",
        "outside_root",
        "text_binary",
    } <= codes
    assert all(row["message"] for row in failures)


def test_unchanged_corpus_makes_no_model_call_and_no_index_write(
    aws_environment: Emulator, corpus: DemoCorpus, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    _run(corpus, settings)
    aws_environment.reset_stats()

    again = _run(corpus, settings)

    assert again.model_calls == 0
    assert again.items["new"] == again.items["changed"] == 0
    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == 0
    assert calls(aws_environment, "s3vectors", "PutVectors") == 0
    assert calls(aws_environment, "s3vectors", "DeleteVectors") == 0


def test_changes_reembed_only_what_changed_and_delete_stale_keys(
    aws_environment: Emulator, corpus: DemoCorpus, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    first = _run(corpus, settings)
    client = aws_environment.client("s3vectors")
    before = index_keys(client, settings)
    pdf_id, text_id, image_id = change_demo_corpus(corpus, seed=1)
    old_pages = {key for key in before if key.startswith(f"{pdf_id}#page=")}
    aws_environment.reset_stats()

    second = _run(corpus, settings)

    after = index_keys(client, settings)
    new_pages = {key for key in after if key.startswith(f"{pdf_id}#page=")}
    assert len(new_pages) == len(old_pages) - 1
    assert not any(key.startswith(image_id) for key in after)
    assert second.items["changed"] == 2
    assert second.items["removed"] == 1
    text_units = {key for key in after if key.startswith(f"{text_id}#chunk=")}
    assert second.model_calls == len(new_pages) + len(text_units)
    assert second.keys_deleted >= 2  # the PDF's last page and the removed image
    assert (
        after
        == (
            before
            - old_pages
            - {k for k in before if k.startswith(text_id + "#")}
            - {k for k in before if k.startswith(image_id)}
        )
        | new_pages
        | text_units
    )
    assert first.run_id != second.run_id


def test_shards_hold_a_global_concurrency_slot_when_one_is_named(
    aws_environment: Emulator, corpus: DemoCorpus, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    name = f"novaflow-bedrock-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        base = _settings(tmp_path)
        settings = base.model_copy(
            update={
                "throughput": base.throughput.model_copy(update={"concurrency_limit_name": name})
            }
        )
        summary = _run(corpus, settings)
        limit = client.read_global_concurrency_limit_by_name(name)
    assert summary.adds_up
    assert summary.shards > 1  # several shards went through one slot, one after another
    assert limit.active_slots == 0  # every slot taken was given back


def test_a_metadata_edit_rewrites_that_items_vectors_with_the_new_metadata(
    aws_environment: Emulator, corpus: DemoCorpus, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    _run(corpus, settings)
    rows = [json.loads(line) for line in corpus.manifest.read_text().splitlines()]
    edited = next(row for row in rows if row.get("id") == "pdf/jazz-history")
    edited["metadata"] = {**edited.get("metadata", {}), "topic": "bebop"}
    corpus.manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    aws_environment.reset_stats()

    second = _run(corpus, settings)

    assert second.items["changed"] == 1
    assert second.items["new"] == 0
    client = aws_environment.client("s3vectors")
    got = client.get_vectors(
        vectorBucketName=settings.index.vector_bucket,
        indexName=settings.index.index,
        keys=["pdf/jazz-history#page=1"],
        returnMetadata=True,
    )["vectors"]
    assert got[0]["metadata"]["topic"] == "bebop"
    pages = len([k for k in index_keys(client, settings) if k.startswith("pdf/jazz-history#")])
    # the pages' inputs did not change: their vectors are reused, written with the new metadata
    assert second.model_calls == 0
    assert second.units_reused == pages
