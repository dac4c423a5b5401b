"""S3 Vectors stand-in through boto3: full-text and hybrid ranking.

Full-text results must equal bm25s's own ranking of the same texts (BM25 "lucene", k1 = 1.2,
b = 0.75, float64, as ``emulator/s3vectors/text_search.py`` documents), whole, filtered,
summed over several keys and paged; hybrid results must equal a Reciprocal Rank Fusion
(constant 60, each list cut to topK, ties by key) computed here from numpy distances and
bm25s scores. Also: analyzers per language, writes seen at once, and state kept on disk.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pytest
import Stemmer
from botocore.client import BaseClient

from emulator.app import Emulator, EmulatorSettings
from emulator.s3vectors.store import VectorStore
from tests.emulator.vector_index_helpers import (
    IndexRef,
    create_text_index,
    text_configurations,
    text_query,
)

COUNT, DIMENSION = 400, 8
GENRES = ("jazz", "rock", "folk")
STEMS = ("play", "jump", "sing", "walk", "cook", "paint", "read", "dance", "talk", "call")
SUFFIXES = ("", "s", "ing", "ed")
WORD_PATTERN = r"(?u)\b\w+\b"  # the standard analyzer on ASCII text: lowercased \w runs
# The vocabulary's first words are the most frequent: "kaka" is in most bodies.
QUERIES = ("kaka", "kamo kari", "ri kari kari", "no such words", "kaka kaka kamo ne zu")


@dataclass(frozen=True)
class Corpus:
    """An index of ``keys[i]`` → ``data[i]`` with metadata ``body`` (standard analyzer),
    ``title`` (English analyzer) and ``genre``."""

    index: IndexRef
    keys: list[str]
    data: np.ndarray
    bodies: list[str]
    titles: list[str]
    genres: list[str]


@pytest.fixture(scope="module")
def corpus(emulator: Emulator) -> Corpus:
    client = emulator.client("s3vectors", retries={"mode": "standard"})
    ref = create_text_index(
        client,
        [{"metadataKey": "body"}, {"metadataKey": "title", "language": "en"}],
        dimension=DIMENSION,
        prefix="ranking",
    )
    rng = np.random.default_rng(20261206)
    syllables = ["ka", "mo", "ri", "ta", "ne", "zu", "po", "lu", "se", "di"]
    vocabulary = [a + b for a in syllables for b in syllables] + syllables
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)  # Zipf-like: some words common
    weights /= weights.sum()

    def words(count: int) -> str:
        return " ".join(rng.choice(vocabulary, size=count, p=weights).tolist())

    bodies = [words(int(rng.integers(3, 40))) for _ in range(COUNT)]
    titles = [
        " ".join(["The"] + [str(rng.choice(STEMS)) + str(rng.choice(SUFFIXES)) for _ in range(3)])
        for _ in range(COUNT)
    ]
    genres = [GENRES[n % 3] for n in range(COUNT)]
    data = rng.standard_normal((COUNT, DIMENSION)).astype(np.float32)
    keys = [f"d{n:03d}" for n in range(COUNT)]
    vectors = [
        {
            "key": keys[n],
            "data": {"float32": data[n].tolist()},
            "metadata": {"body": bodies[n], "title": titles[n], "genre": genres[n]},
        }
        for n in range(COUNT)
    ]
    client.put_vectors(indexArn=ref.arn, vectors=vectors[:250])
    client.put_vectors(indexArn=ref.arn, vectors=vectors[250:])
    return Corpus(ref, keys, data, bodies, titles, genres)


def library_scores(texts: Sequence[str], query: str, language: str | None = None) -> np.ndarray:
    """bm25s's score of each of ``texts`` for ``query``, indexed and queried by bm25s itself."""
    stopwords = "en" if language == "en" else None
    stemmer = Stemmer.Stemmer("english") if language == "en" else None

    def tokens(batch: Sequence[str]) -> list[list[str]]:
        options = {"stopwords": stopwords, "stemmer": stemmer, "show_progress": False}
        return bm25s.tokenize(list(batch), token_pattern=WORD_PATTERN, return_ids=False, **options)

    retriever = bm25s.BM25(k1=1.2, b=0.75, method="lucene", dtype="float64")
    retriever.index(tokens(texts), show_progress=False)
    query_terms = tokens([query])
    if not query_terms[0]:
        return np.zeros(len(texts))
    documents, scores = retriever.retrieve(query_terms, k=len(texts), show_progress=False)
    ranked = np.zeros(len(texts))
    ranked[documents[0]] = scores[0]
    return ranked


def library_ranking(
    keys: Sequence[str], scores: np.ndarray, keep: Sequence[bool] | None = None
) -> list[tuple[str, float]]:
    """(key, score) of every matched document kept, best first, ties by key."""
    kept = [
        (keys[n], float(scores[n]))
        for n in range(len(keys))
        if scores[n] > 0 and (keep is None or keep[n])
    ]
    return sorted(kept, key=lambda pair: (-pair[1], pair[0]))


def stand_in_results(client: BaseClient, **members: Any) -> list[dict[str, Any]]:
    """Every result of a QueryVectors request, page after page, through the paginator."""
    pages = client.get_paginator("query_vectors").paginate(**members)
    return [vector for page in pages for vector in page["vectors"]]


def bm25_of(vector: dict[str, Any]) -> dict[str, float]:
    return {s["metadataKey"]: s["score"] for s in vector["scores"].get("bm25Scores", [])}


@pytest.mark.parametrize("query", QUERIES)
def test_full_text_ranking_equals_the_library_ranking(
    s3vectors: BaseClient, corpus: Corpus, query: str
) -> None:
    expected = library_ranking(corpus.keys, library_scores(corpus.bodies, query))
    found = stand_in_results(
        s3vectors,
        indexArn=corpus.index.arn,
        topK=COUNT,
        queryTexts=text_query("body", query),
        returnScores=True,
    )
    assert [v["key"] for v in found] == [key for key, _ in expected]
    assert [bm25_of(v)["body"] for v in found] == pytest.approx([s for _, s in expected])
    if query == "kaka":
        assert len(found) > 200  # pages of 100


def test_english_analyzer_stems_and_drops_stop_words(s3vectors: BaseClient, corpus: Corpus) -> None:
    query = "The jumping painters are playing"
    expected = library_ranking(corpus.keys, library_scores(corpus.titles, query, "en"))
    found = stand_in_results(
        s3vectors,
        indexArn=corpus.index.arn,
        topK=50,
        queryTexts=text_query("title", query),
        returnScores=True,
    )
    assert [v["key"] for v in found] == [key for key, _ in expected][:50]
    assert [bm25_of(v)["title"] for v in found] == pytest.approx([s for _, s in expected][:50])


def test_a_filter_narrows_candidates_but_not_the_statistics(
    s3vectors: BaseClient, corpus: Corpus
) -> None:
    scores = library_scores(corpus.bodies, "mo ne")
    expected = library_ranking(corpus.keys, scores, [g == "jazz" for g in corpus.genres])
    found = stand_in_results(
        s3vectors,
        indexArn=corpus.index.arn,
        topK=30,
        queryTexts=text_query("body", "mo ne"),
        filter={"genre": "jazz"},
        returnScores=True,
    )
    assert [v["key"] for v in found] == [key for key, _ in expected][:30]
    assert [bm25_of(v)["body"] for v in found] == pytest.approx([s for _, s in expected][:30])


def test_several_query_texts_rank_by_the_sum_of_their_scores(
    s3vectors: BaseClient, corpus: Corpus
) -> None:
    body = library_scores(corpus.bodies, "kamo")
    title = library_scores(corpus.titles, "sing", "en")
    expected = library_ranking(corpus.keys, body + title)[:120]
    found = stand_in_results(
        s3vectors,
        indexArn=corpus.index.arn,
        topK=120,
        queryTexts=[*text_query("body", "kamo"), *text_query("title", "sing")],
        returnScores=True,
    )
    assert [v["key"] for v in found] == [key for key, _ in expected]
    for vector in found:
        n = corpus.keys.index(vector["key"])
        reported = bm25_of(vector)
        assert reported == pytest.approx(
            {k: s for k, s in (("body", body[n]), ("title", title[n])) if s > 0}
        )


def cosine_ranking(corpus: Corpus, query: np.ndarray, keep: Sequence[bool]) -> list[tuple]:
    """(key, distance) of the kept vectors, nearest first by 1 − cosine similarity."""
    rows = corpus.data.astype(np.float64)
    q = query.astype(np.float32).astype(np.float64)
    distances = 1 - rows @ q / (np.linalg.norm(rows, axis=1) * np.linalg.norm(q))
    pairs = [(corpus.keys[n], float(distances[n])) for n in range(COUNT) if keep[n]]
    return sorted(pairs, key=lambda pair: (pair[1], pair[0]))


@pytest.mark.parametrize(("top_k", "genre"), [(10, None), (150, "rock")])
def test_hybrid_ranking_equals_a_reference_rrf(
    s3vectors: BaseClient, corpus: Corpus, top_k: int, genre: str | None
) -> None:
    query = np.random.default_rng(top_k).standard_normal(DIMENSION).astype(np.float32)
    keep = [genre is None or g == genre for g in corpus.genres]
    nearest = cosine_ranking(corpus, query, keep)[:top_k]
    texts = {"body": library_scores(corpus.bodies, "kari mo"), "title": None}
    texts["title"] = library_scores(corpus.titles, "cooked dances", "en")
    lists = {k: library_ranking(corpus.keys, s, keep)[:top_k] for k, s in texts.items()}
    fused: dict[str, float] = {}
    for ranking in [nearest, *lists.values()]:
        for position, (key, _) in enumerate(ranking):
            fused[key] = fused.get(key, 0.0) + 1 / (60 + position + 1)
    expected = sorted(fused, key=lambda key: (-fused[key], key))[:top_k]
    members: dict[str, Any] = {"filter": {"genre": genre}} if genre else {}
    found = stand_in_results(
        s3vectors,
        indexArn=corpus.index.arn,
        topK=top_k,
        queryVector={"float32": query.tolist()},
        queryTexts=[*text_query("body", "kari mo"), *text_query("title", "cooked dances")],
        returnScores=True,
        returnDistance=True,
        **members,
    )
    assert [v["key"] for v in found] == expected
    distances = dict(nearest)
    for vector in found:
        key, scores = vector["key"], vector["scores"]
        assert scores["fused"] == pytest.approx(fused[key])
        assert scores.get("vectorDistance") == pytest.approx(distances.get(key), abs=1e-6)
        assert vector.get("distance") == scores.get("vectorDistance")
        in_lists = {k: dict(ranking)[key] for k, ranking in lists.items() if key in dict(ranking)}
        assert bm25_of(vector) == pytest.approx(in_lists)


def test_writes_are_searchable_at_once(s3vectors: BaseClient) -> None:
    ref = create_text_index(s3vectors, [{"metadataKey": "body"}])
    one = {"float32": [1.0, 0.0, 0.0, 0.0]}
    put = s3vectors.put_vectors
    put(indexArn=ref.arn, vectors=[{"key": "a", "data": one, "metadata": {"body": "old words"}}])
    query = {"indexArn": ref.arn, "topK": 5, "queryTexts": text_query("body", "fresh")}
    assert s3vectors.query_vectors(**query)["vectors"] == []
    put(indexArn=ref.arn, vectors=[{"key": "a", "data": one, "metadata": {"body": "fresh words"}}])
    assert s3vectors.query_vectors(**query)["vectors"] == [{"key": "a"}]
    s3vectors.delete_vectors(indexArn=ref.arn, keys=["a"])
    assert s3vectors.query_vectors(**query)["vectors"] == []


LANGUAGE_CASES = [
    (None, "東京", "京都に行く", ["hit"]),  # standard: each Han character is a term
    ("ja", "東京", "京都に行く", []),  # CJK bigrams: 東京 is not in 京都
    ("ja", "東京タワー", "東京都のタワー", ["hit"]),
    ("zh", "北京大学", "我在北京工作", ["hit"]),
    ("ko", "서울시", "서울시청 앞", ["hit"]),
    ("fr", "chanteuses", "la chanteuse", ["hit"]),
    ("de", "Häuser", "das Haus", ["hit"]),
    ("es", "las canciones", "una canción", ["hit"]),
    ("en", "the", "the the the", []),  # a stop word only: matches nothing
]


@pytest.mark.parametrize(("language", "query", "stored", "expected"), LANGUAGE_CASES)
def test_language_analyzers(
    s3vectors: BaseClient, language: str | None, query: str, stored: str, expected: list[str]
) -> None:
    config = {"metadataKey": "text"} | ({"language": language} if language else {})
    ref = create_text_index(s3vectors, [config])
    one = {"float32": [1.0, 0.0, 0.0, 0.0]}
    s3vectors.put_vectors(
        indexArn=ref.arn, vectors=[{"key": "hit", "data": one, "metadata": {"text": stored}}]
    )
    found = s3vectors.query_vectors(indexArn=ref.arn, topK=3, queryTexts=text_query("text", query))
    assert [v["key"] for v in found["vectors"]] == expected


def test_arrays_of_strings_are_searchable_and_other_values_are_not(s3vectors: BaseClient) -> None:
    ref = create_text_index(s3vectors, [{"metadataKey": "tags"}])
    one = {"float32": [1.0, 0.0, 0.0, 0.0]}
    values = {"list": ["blue", "note"], "number": 7, "mixed": ["blue", 1], "flag": True}
    s3vectors.put_vectors(
        indexArn=ref.arn,
        vectors=[{"key": k, "data": one, "metadata": {"tags": v}} for k, v in values.items()],
    )
    for text in ("note", "blue", "7", "true"):
        found = s3vectors.query_vectors(
            indexArn=ref.arn, topK=5, queryTexts=text_query("tags", text)
        )["vectors"]
        assert found == ([{"key": "list"}] if text in ("note", "blue") else [])


def test_configurations_and_backfill_survive_a_restart(tmp_path: Path) -> None:
    settings = EmulatorSettings(state_dir=tmp_path / "state")
    with Emulator(settings) as first:
        client = first.client("s3vectors")
        ref = create_text_index(client, [{"metadataKey": "body", "language": "fr"}])
        client.update_metadata_configuration(
            indexArn=ref.arn, add={"textSearchConfigurations": [{"metadataKey": "late"}]}
        )
    with Emulator(settings) as second:
        client = second.client("s3vectors")
        statuses = [[c["status"] for c in text_configurations(client, ref)] for _ in range(2)]
        assert statuses == [["ACTIVE", "BUILDING"], ["ACTIVE", "ACTIVE"]]
        assert text_configurations(client, ref)[0]["language"] == "fr"


def test_a_database_from_before_text_search_gains_the_column(tmp_path: Path) -> None:
    VectorStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "s3vectors.sqlite3") as database:
        database.execute("ALTER TABLE indexes DROP COLUMN text_search")
    store = VectorStore(tmp_path)
    try:
        assert store.indexes("any", "", "", 10) == []
    finally:
        store.close()
