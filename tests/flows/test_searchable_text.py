"""Searchable text through whole runs: with it on, each text chunk and PDF page carries its
text in a full-text searchable key, an exact word finds its item in text and hybrid search, an
unchanged re-run writes nothing; turning it on for an index built without it configures the
index and writes the texts without embedding anything again."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pymupdf
import pytest

from emulator.app import Emulator
from flows.reembed import ReembedParameters, reembed
from tasks.index.search import TextSearchUnavailableError, search_index
from tasks.report.summary import RunSummary
from tasks.settings import EvaluationSettings, IndexSettings, NovaflowSettings, ThroughputSettings
from tasks.vector_store import SEARCHABLE_TEXT_KEY
from tests.flows.stand_in_reads import calls

NOTES = {
    "pumps.txt": "The coolant pump failed with error code E-4471 after the pressure test.",
    "rivers.txt": "Tidal rivers carry silt into the estuary every spring.",
    "bread.txt": "A sourdough starter needs flour, water and patience.",
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    for name, text in NOTES.items():
        (root / name).write_text(text)
    document = pymupdf.open()
    page = document.new_page()
    page.insert_text((72, 72), "Maintenance manual: replace gasket part GX-209 yearly.")
    document.save(str(root / "manual.pdf"))
    document.close()
    return root


def _settings(tmp_path: Path, index: str, searchable: bool) -> NovaflowSettings:
    return NovaflowSettings(
        store=str(tmp_path / "store"),
        backend="aws",
        index=IndexSettings(vector_bucket="flow-tests", index=index, searchable_text=searchable),
        throughput=ThroughputSettings(shard_size=4, concurrency=2, render_processes=1),
        evaluation=EvaluationSettings(enabled=False),
    )


def _run(corpus: Path, settings: NovaflowSettings) -> RunSummary:
    return reembed(ReembedParameters(corpus=str(corpus), settings=settings))


def _texts(stand_in: Emulator, settings: NovaflowSettings) -> dict[str, str | None]:
    client = stand_in.client("s3vectors")
    where = {"vectorBucketName": settings.index.vector_bucket, "indexName": settings.index.index}
    keys = [v["key"] for v in client.list_vectors(**where)["vectors"]]
    vectors = client.get_vectors(**where, keys=keys, returnMetadata=True)["vectors"]
    return {v["key"]: v.get("metadata", {}).get(SEARCHABLE_TEXT_KEY) for v in vectors}


def test_an_exact_word_finds_its_item_in_text_and_hybrid_search(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    settings = _settings(tmp_path, f"text-{uuid.uuid4().hex[:10]}", searchable=True)
    first = _run(corpus, settings)

    texts = _texts(aws_environment, settings)
    assert texts["pumps.txt#chunk=0"] == NOTES["pumps.txt"]
    assert "GX-209" in (texts["manual.pdf#page=1"] or "")
    assert first.texts_attached == 4
    assert first.texts_truncated == 0
    for mode in ("text", "hybrid"):
        hits = search_index(settings, "E-4471", None, 3, mode=mode)
        assert hits[0].key == "pumps.txt#chunk=0", mode
        assert hits[0].scores is not None
    (only,) = search_index(settings, "gasket GX-209", None, 1, mode="text")
    assert only.key == "manual.pdf#page=1"
    assert "bm25" in only.shown_score

    aws_environment.reset_stats()
    again = _run(corpus, settings)
    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == 0
    assert again.vectors_written == 0
    assert aws_environment.stats()["s3vectors"]["calls"].get("PutVectors", 0) == 0


def test_turning_searchable_text_on_writes_the_texts_without_embedding_again(
    aws_environment: Emulator, corpus: Path, tmp_path: Path
) -> None:
    index = f"later-{uuid.uuid4().hex[:10]}"
    plain = _settings(tmp_path, index, searchable=False)
    _run(corpus, plain)
    assert set(_texts(aws_environment, plain).values()) == {None}
    with pytest.raises(TextSearchUnavailableError):
        search_index(plain, "E-4471", None, 3, mode="text")

    aws_environment.reset_stats()
    searchable = _settings(tmp_path, index, searchable=True)
    turned_on = _run(corpus, searchable)

    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == 0
    assert calls(aws_environment, "s3vectors", "UpdateMetadataConfiguration") == 1
    assert turned_on.texts_attached == 4
    texts = _texts(aws_environment, searchable)
    assert texts["rivers.txt#chunk=0"] == NOTES["rivers.txt"]
    # the index kept "searchable_text" filterable (it was made without it), so texts fit 2 KB
    assert search_index(searchable, "silt estuary", None, 1, mode="text")[0].key == (
        "rivers.txt#chunk=0"
    )
    aws_environment.reset_stats()
    _run(corpus, searchable)
    assert calls(aws_environment, "bedrock-runtime", "InvokeModel") == 0
    assert aws_environment.stats()["s3vectors"]["calls"].get("PutVectors", 0) == 0
    layout = json.loads(
        (Path(searchable.store) / "state" / "flow-tests" / index / "layout.json").read_text()
    )
    assert layout["searchable_text"] is True
