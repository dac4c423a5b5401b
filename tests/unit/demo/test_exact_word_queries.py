"""The demo's exact-word queries separate the retrieval modes on the stand-in: its vector search
prefers the care sheet, BM25 and their fusion the station log that holds the exact word.

Ranked here with the stand-in's own pieces (its text vectors, its BM25 analyzer and model, its
RRF) over what the demo index holds as searchable text: each text chunk and each PDF page. The
index's image, audio and video vectors are left out: near-orthogonal to a text query, they sit
below every text that shares a word with it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping

import numpy as np
import pymupdf
import pytest

from emulator.nova.vectors import text_embedding
from emulator.s3vectors.text_search import analyze, new_bm25, reciprocal_rank_fusion
from tasks.demo.corpus import DEMO_QRELS, EXACT_WORD_QUERY_TYPE, PDF_TOPICS, long_text
from tasks.demo.demo_texts import TEXTS
from tasks.demo.pdf_documents import topic_pdf
from tasks.media.texts import text_chunks
from tasks.settings import EmbeddingSettings, IndexSettings

EXACT = [row for row in DEMO_QRELS if row.get("type") == EXACT_WORD_QUERY_TYPE]
CARE_SHEET = "text/station-care"


@pytest.fixture(scope="module")
def searchable() -> dict[str, str]:
    """Unit key → searchable text, as the demo's index holds them (seed 0)."""
    chunk_chars = EmbeddingSettings().text_chunk_chars
    files = {**TEXTS, "astronomy-history.txt": long_text(0)}
    texts: dict[str, str] = {}
    for name, text in files.items():
        item_id = f"text/{name.rsplit('.', 1)[0]}"
        for number, (start, end) in enumerate(text_chunks(text, chunk_chars)):
            texts[f"{item_id}#chunk={number}"] = text[start:end]
    for topic in PDF_TOPICS:
        with pymupdf.open(stream=topic_pdf(topic, 0), filetype="pdf") as document:
            for number, page in enumerate(document, 1):
                texts[f"pdf/{topic.slug}#page={number}"] = page.get_text()
    return texts


@functools.cache
def _vector(text: str) -> np.ndarray:
    return text_embedding(text, EmbeddingSettings().dimension)


def _rankings(texts: Mapping[str, str], query: str) -> dict[str, list[str]]:
    """The item ids each mode ranks, best first (PDF pages are images to the vector search)."""
    wanted = _vector(query)
    chunks = [key for key in texts if "#chunk=" in key]
    similarity = {key: float(_vector(texts[key]) @ wanted) for key in chunks}
    vector = sorted(chunks, key=lambda key: (-similarity[key], key))
    language = IndexSettings().text_language
    keys = list(texts)
    model = new_bm25()
    model.index(analyze([texts[key] for key in keys], language), show_progress=False)
    scores = np.asarray(model.get_scores(analyze([query], language)[0]))
    text = sorted((k for k, s in zip(keys, scores, strict=True) if s > 0),
                  key=lambda key: (-scores[keys.index(key)], key))  # fmt: skip
    fused = reciprocal_rank_fusion([vector, text])
    hybrid = sorted(fused, key=lambda key: (-fused[key], key))
    return {
        mode: [key.split("#", 1)[0] for key in ranking]
        for mode, ranking in (("vector", vector), ("text", text), ("hybrid", hybrid))
    }


def test_there_are_three_exact_word_queries_each_judging_one_log_relevant() -> None:
    assert [row["query_id"] for row in EXACT] == ["error-code", "part-number", "technician"]
    for row in EXACT:
        (relevant,) = [item for item, grade in row["relevant"].items() if grade > 0]
        assert relevant.endswith("-station-log")
        assert row["relevant"][CARE_SHEET] == 0
    json.dumps(DEMO_QRELS)  # the qrels file is written from these rows


@pytest.mark.parametrize("row", EXACT, ids=[row["query_id"] for row in EXACT])
def test_vector_search_misses_the_log_that_text_and_hybrid_search_find_first(
    searchable: dict[str, str], row: dict[str, object]
) -> None:
    relevant = row["relevant"]
    assert isinstance(relevant, dict)
    (log,) = [item for item, grade in relevant.items() if grade > 0]
    exact_word = str(row["text"]).split()[-1]
    assert sum(exact_word in text for text in searchable.values()) == 1

    ranked = _rankings(searchable, str(row["text"]))

    assert ranked["vector"][:2] == [CARE_SHEET, log]
    assert ranked["text"][0] == log
    # Not second either, or the fusion would tie the two and break the tie by key.
    assert ranked["text"].index(CARE_SHEET) >= 2
    assert ranked["hybrid"][0] == log


def test_the_other_text_queries_still_find_their_text_first_in_every_mode(
    searchable: dict[str, str],
) -> None:
    for row in DEMO_QRELS:
        if "text" not in row or row in EXACT:
            continue
        best = max(row["relevant"].items(), key=lambda item: item[1])[0]
        ranked = _rankings(searchable, row["text"])
        for mode, ranking in ranked.items():
            assert best in ranking[:2], (row["query_id"], mode)
