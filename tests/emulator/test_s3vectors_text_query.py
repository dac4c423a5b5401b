"""S3 Vectors stand-in through boto3: the ``queryTexts`` rules of QueryVectors, each answered
with the service's error code and status, and which scores and distances each kind of query
(vector-only, full-text-only, hybrid) returns, as the service model says.

Rules botocore enforces itself are sent once through the normal client, which refuses them, and
once through a client with parameter validation off, so that the stand-in's own check answers.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ParamValidationError

from emulator.app import Emulator
from tests.emulator.vector_index_helpers import IndexRef, create_text_index, refused, text_query

VECTOR = {"float32": [1.0, 0.0, 0.0, 0.0]}


@pytest.fixture
def raw(stand_in: Emulator) -> BaseClient:
    """An s3vectors client that sends requests botocore itself would refuse."""
    return stand_in.client("s3vectors", parameter_validation=False)


@pytest.fixture
def index(s3vectors: BaseClient) -> IndexRef:
    """An ENHANCED index with ``body`` (standard analyzer, non-filterable) and ``title`` (en)
    searchable, holding ``a`` (both keys) and ``b`` (``body`` only)."""
    ref = create_text_index(
        s3vectors,
        [{"metadataKey": "body"}, {"metadataKey": "title", "language": "en"}],
        non_filterable=["body"],
    )
    s3vectors.put_vectors(
        **ref.address(),
        vectors=[
            {"key": "a", "data": VECTOR, "metadata": {"body": "jazz piano", "title": "Jazz"}},
            {"key": "b", "data": {"float32": [0, 1, 0, 0]}, "metadata": {"body": "jazz rock"}},
        ],
    )
    return ref


# queryTexts


@pytest.mark.parametrize(
    ("members", "fragment", "path"),
    [
        ({}, "a request must include queryVector, queryTexts, or both", "queryVector"),
        (
            {"queryTexts": [{"text": f"t{n}", "metadataKey": f"k{n}"} for n in range(11)]},
            "queryTexts must have between 1 and 10 items, got 11",
            "queryTexts",
        ),
        (
            {"queryTexts": [{"text": "j" * 1025, "metadataKey": "body"}]},
            "queryTexts[0].text must have a length between 1 and 1024, got 1025",
            "queryTexts[0].text",
        ),
        (
            {"queryTexts": [{"text": "jazz", "metadataKey": "k" * 64}]},
            "queryTexts[0].metadataKey must have a length between 1 and 63, got 64",
            "queryTexts[0].metadataKey",
        ),
        (
            {"queryTexts": [*text_query("body"), *text_query("body", "rock")]},
            "queryTexts names metadata key 'body' more than once",
            "queryTexts",
        ),
        (
            {"queryTexts": [*text_query("title"), *text_query("genre")]},
            "Metadata key 'genre' is not full-text searchable in index 'index'",
            "queryTexts[1].metadataKey",
        ),
        (
            {"queryTexts": text_query("body"), "queryMode": "CLASSIC"},
            "queryMode CLASSIC cannot be used on an ENHANCED index",
            "queryMode",
        ),
        (
            {"queryTexts": text_query("body"), "filter": {"body": "jazz"}},
            "metadata key 'body' is non-filterable for this index",
            "filter",
        ),
        (
            {"queryTexts": text_query("body"), "queryVector": {"float32": [1.0, 0.0]}},
            "vector must have length 4, but has length 2",
            "queryVector",
        ),
    ],
)
def test_query_text_rules(
    s3vectors: BaseClient, index: IndexRef, members: dict[str, Any], fragment: str, path: str
) -> None:
    query = s3vectors.query_vectors
    response = refused(
        query, "ValidationException", 400, fragment, indexArn=index.arn, topK=5, **members
    )
    assert response["fieldList"][0]["path"] == path


@pytest.mark.parametrize(
    ("query_texts", "fragment"),
    [
        ([], "queryTexts must have between 1 and 10 items, got 0"),
        ([{"text": "", "metadataKey": "body"}], "text must have a length between 1 and 1024"),
        ([{"metadataKey": "body"}], "queryTexts[0].text is required"),
        ([{"text": "jazz"}], "queryTexts[0].metadataKey is required"),
        ([{"text": 3, "metadataKey": "body"}], "queryTexts[0].text must be a JSON string"),
    ],
)
def test_query_text_rules_botocore_checks_first(
    s3vectors: BaseClient,
    raw: BaseClient,
    index: IndexRef,
    query_texts: list[Any],
    fragment: str,
) -> None:
    with pytest.raises(ParamValidationError):
        s3vectors.query_vectors(indexArn=index.arn, topK=5, queryTexts=query_texts)
    query = raw.query_vectors
    refused(
        query,
        "ValidationException",
        400,
        fragment,
        indexArn=index.arn,
        topK=5,
        queryTexts=query_texts,
    )


def test_return_scores_must_be_a_boolean(raw: BaseClient, index: IndexRef) -> None:
    fragment = "returnScores must be a JSON boolean"
    members = {"indexArn": index.arn, "topK": 1, "queryTexts": text_query("body")}
    refused(raw.query_vectors, "ValidationException", 400, fragment, **members, returnScores=1)


def test_longest_text_and_ten_texts_are_accepted(s3vectors: BaseClient) -> None:
    keys = [f"k{n}" for n in range(10)]
    ref = create_text_index(s3vectors, [{"metadataKey": key} for key in keys])
    texts = [{"text": "jazz " * 204 + "rock", "metadataKey": key} for key in keys]
    assert len(texts[0]["text"]) == 1024
    assert s3vectors.query_vectors(indexArn=ref.arn, topK=3, queryTexts=texts)["vectors"] == []


def test_full_text_queries_need_an_enhanced_index(s3vectors: BaseClient) -> None:
    classic = create_text_index(s3vectors, [], default_mode="CLASSIC")
    fragment = "Full-text and hybrid searches require a vector index in ENHANCED mode"
    for mode in ({}, {"queryMode": "ENHANCED"}):
        members = {"indexArn": classic.arn, "topK": 3, "queryTexts": text_query("body"), **mode}
        refused(s3vectors.query_vectors, "ValidationException", 400, fragment, **members)


def test_next_token_is_bound_to_the_query_texts(s3vectors: BaseClient) -> None:
    ref = create_text_index(s3vectors, [{"metadataKey": "body"}])
    vectors = [
        {"key": f"v{n:03d}", "data": VECTOR, "metadata": {"body": f"jazz take {n}"}}
        for n in range(101)
    ]
    s3vectors.put_vectors(indexArn=ref.arn, vectors=vectors)
    first = s3vectors.query_vectors(indexArn=ref.arn, topK=101, queryTexts=text_query("body"))
    assert len(first["vectors"]) == 100
    fragment = "nextToken belongs to another query"
    members = {"indexArn": ref.arn, "topK": 101, "nextToken": first["nextToken"]}
    refused(
        s3vectors.query_vectors,
        "ValidationException",
        400,
        fragment,
        **members,
        queryTexts=text_query("body", "take"),
    )
    rest = s3vectors.query_vectors(**members, queryTexts=text_query("body"))
    assert len(rest["vectors"]) == 1
    assert "nextToken" not in rest


# What each kind of query returns


def test_vector_only_queries_carry_no_scores(s3vectors: BaseClient, index: IndexRef) -> None:
    found = s3vectors.query_vectors(
        indexArn=index.arn, topK=2, queryVector=VECTOR, returnScores=True, returnDistance=True
    )["vectors"]
    assert [(v["key"], v["distance"]) for v in found] == [("a", 0.0), ("b", 1.0)]
    assert not any("scores" in vector for vector in found)


def test_full_text_only_results_carry_the_bm25_score_of_each_key_they_matched(
    s3vectors: BaseClient, index: IndexRef
) -> None:
    texts = [*text_query("body", "jazz"), *text_query("title", "jazzy JAZZ")]
    found = s3vectors.query_vectors(
        indexArn=index.arn,
        topK=5,
        queryTexts=texts,
        returnScores=True,
        returnDistance=True,
        returnMetadata=True,
    )["vectors"]
    assert [vector["key"] for vector in found] == ["a", "b"]
    assert not any("distance" in vector for vector in found)
    assert found[1]["metadata"] == {"body": "jazz rock"}
    first, second = (vector["scores"] for vector in found)
    assert set(first) == {"bm25Scores"}
    assert [score["metadataKey"] for score in first["bm25Scores"]] == ["body", "title"]
    assert [score["metadataKey"] for score in second["bm25Scores"]] == ["body"]
    assert all(score["score"] > 0 for score in first["bm25Scores"])
    plain = s3vectors.query_vectors(indexArn=index.arn, topK=5, queryTexts=texts)["vectors"]
    assert plain == [{"key": "a"}, {"key": "b"}]


def test_hybrid_results_carry_fused_bm25_and_vector_distance(
    s3vectors: BaseClient, index: IndexRef
) -> None:
    found = s3vectors.query_vectors(
        indexArn=index.arn,
        topK=1,
        queryVector={"float32": [0.0, 1.0, 0.0, 0.0]},
        queryTexts=text_query("title", "jazz"),
        returnScores=True,
        returnDistance=True,
    )["vectors"]
    # b is nearest, a the only title match: both rank 1 in one list, so the key breaks the tie.
    # a's BM25: one document, tf = dl = avgdl = 1: ln(1 + 0.5 / 1.5) · 1 / (1 + 1.2).
    assert found == [
        {
            "key": "a",
            "scores": {
                "fused": pytest.approx(1 / 61),
                "bm25Scores": [
                    {"metadataKey": "title", "score": pytest.approx(math.log(4 / 3) / 2.2)}
                ],
            },
        }
    ]
    both = s3vectors.query_vectors(
        indexArn=index.arn,
        topK=2,
        queryVector={"float32": [0.0, 1.0, 0.0, 0.0]},
        queryTexts=text_query("title", "jazz"),
        returnScores=True,
        returnDistance=True,
    )["vectors"]
    assert [vector["key"] for vector in both] == ["a", "b"]
    assert both[0]["distance"] == both[0]["scores"]["vectorDistance"] == pytest.approx(1.0)
    assert both[1]["scores"] == {"fused": pytest.approx(1 / 61), "vectorDistance": 0.0}


def test_filters_narrow_full_text_and_hybrid_results(
    s3vectors: BaseClient, index: IndexRef
) -> None:
    texts = text_query("body", "jazz")
    for vector in ({}, {"queryVector": VECTOR}):
        found = s3vectors.query_vectors(
            indexArn=index.arn,
            topK=5,
            queryTexts=texts,
            filter={"title": {"$startsWith": "Ja"}},
            **vector,
        )["vectors"]
        assert found == [{"key": "a"}]
