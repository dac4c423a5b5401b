"""Pay once per distinct input: a copied, renamed or moved file takes the vectors already
embedded for its content, a duplicate within one run is embedded once, and a config that
changes the vectors never reuses another config's."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pymupdf
import pytest

from emulator.app import Emulator
from flows.reembed import ReembedParameters, reembed
from tasks.report.summary import RunSummary
from tasks.settings import (
    EmbeddingSettings,
    EvaluationSettings,
    IndexSettings,
    NovaflowSettings,
    ThroughputSettings,
)
from tests.flows.stand_in_reads import calls, index_keys


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "notes").mkdir(parents=True)
    (root / "notes" / "tides.txt").write_text("Spring tides flood the salt marsh twice a month.")
    (root / "notes" / "kilns.txt").write_text("A wood-fired kiln reaches 1300 degrees.")
    document = pymupdf.open()
    for text in ("chapter one: the harbour", "chapter two: the lighthouse"):
        document.new_page().insert_text((72, 72), text)
    document.save(str(root / "guide.pdf"))
    document.close()
    return root


def _settings(tmp_path: Path, index: str, dimension: int = 1024) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        embedding=EmbeddingSettings(dimension=dimension),
        index=IndexSettings(vector_bucket="flow-tests", index=index),
        throughput=ThroughputSettings(shard_size=4, concurrency=2, render_processes=1),
        evaluation=EvaluationSettings(enabled=False),
    )


def _run(corpus: Path, settings: NovaflowSettings) -> RunSummary:
    return reembed(ReembedParameters(corpus=str(corpus), settings=settings))


def test_copied_renamed_and_moved_files_make_no_model_call(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, f"reuse-{uuid.uuid4().hex[:10]}")
    _run(corpus, settings)
    shutil.copy(corpus / "notes" / "tides.txt", corpus / "tides-copy.txt")  # a copy
    (corpus / "archive").mkdir()
    (corpus / "notes" / "kilns.txt").rename(corpus / "archive" / "kilns.txt")  # a move
    (corpus / "guide.pdf").rename(corpus / "harbour-guide.pdf")  # a rename
    aws_environment.reset_stats()

    second = _run(corpus, settings)

    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == 0
    assert second.units_reused == 4  # the copy, the move and the renamed PDF's two pages
    assert second.model_calls == 0
    assert index_keys(aws_environment.client("s3vectors"), settings) == {
        "notes/tides.txt#chunk=0",
        "tides-copy.txt#chunk=0",
        "archive/kilns.txt#chunk=0",
        "harbour-guide.pdf#page=1",
        "harbour-guide.pdf#page=2",
    }
    vectors = aws_environment.client("s3vectors").get_vectors(
        vectorBucketName="flow-tests", indexName=settings.index.index,
        keys=["notes/tides.txt#chunk=0", "tides-copy.txt#chunk=0"], returnData=True,
    )["vectors"]  # fmt: skip
    assert vectors[0]["data"] == vectors[1]["data"]


def test_duplicates_within_one_run_are_embedded_once(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    for n in range(3):
        shutil.copy(corpus / "notes" / "tides.txt", corpus / f"tides-{n}.txt")
    settings = _settings(tmp_path, f"dups-{uuid.uuid4().hex[:10]}")
    aws_environment.reset_stats()

    first = _run(corpus, settings)

    # tides once, kilns, two pages
    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == 4
    assert first.units_reused == 3
    assert len(index_keys(aws_environment.client("s3vectors"), settings)) == 7
    assert first.adds_up


def test_a_config_that_changes_the_vectors_embeds_again(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    _run(corpus, _settings(tmp_path, f"wide-{uuid.uuid4().hex[:10]}"))
    aws_environment.reset_stats()

    narrow = _run(corpus, _settings(tmp_path, f"narrow-{uuid.uuid4().hex[:10]}", dimension=256))

    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == 4
    assert narrow.units_reused == 0
