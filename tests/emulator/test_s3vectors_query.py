"""S3 Vectors stand-in: QueryVectors — exact results against numpy brute force, the filter
grammar, pagination, index modes and the recall of approximate search."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest

from emulator.errors import ServiceError
from emulator.s3vectors import S3VectorsService, SearchSettings

BUCKET = {"vectorBucketName": "media"}


def call(service: S3VectorsService, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return service.handle(operation, body, {}, {})


def expect_error(
    service: S3VectorsService, body: Mapping[str, Any], code: str, status: int, fragment: str
) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call(service, "QueryVectors", body)
    error = caught.value
    assert (error.code, error.status) == (code, status)
    assert fragment in error.message
    return error


def make_index(
    service: S3VectorsService,
    name: str,
    metric: str,
    data: np.ndarray,
    metadata: list[dict[str, Any]] | None = None,
    **definition: Any,
) -> dict[str, str]:
    """An index ``name`` holding row ``i`` of ``data`` under key ``v{i}``; returns its address."""
    if not call(service, "ListVectorBuckets", {})["vectorBuckets"]:
        call(service, "CreateVectorBucket", BUCKET)
    index = {**BUCKET, "indexName": name}
    call(
        service,
        "CreateIndex",
        {
            **index,
            "dataType": "float32",
            "dimension": data.shape[1],
            "distanceMetric": metric,
            **definition,
        },
    )
    for start in range(0, len(data), 500):
        vectors = [
            {
                "key": f"v{i}",
                "data": {"float32": data[i].tolist()},
                "metadata": metadata[i] if metadata else {"row": i},
            }
            for i in range(start, min(start + 500, len(data)))
        ]
        call(service, "PutVectors", {**index, "vectors": vectors})
    return index


def brute_force(
    data: np.ndarray, query: np.ndarray, metric: str, k: int
) -> list[tuple[str, float]]:
    """The exact top ``k`` (key, distance) by numpy over the float32-stored vectors."""
    stored = data.astype(np.float32).astype(np.float64)
    q = query.astype(np.float32).astype(np.float64)
    if metric == "cosine":
        distances = 1 - stored @ q / (np.linalg.norm(stored, axis=1) * np.linalg.norm(q))
    else:
        distances = np.linalg.norm(stored - q, axis=1)
    order = np.argsort(distances, kind="stable")[:k]
    return [(f"v{i}", float(distances[i])) for i in order]


def query_body(
    index: Mapping[str, str], query: np.ndarray, top_k: int, **options: Any
) -> dict[str, Any]:
    return {**index, "topK": top_k, "queryVector": {"float32": query.tolist()}, **options}


@pytest.fixture
def service() -> Iterator[S3VectorsService]:
    service = S3VectorsService(None, enforce_write_limits=False)
    yield service
    service.close()


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_exact_results_match_numpy_brute_force(service: S3VectorsService, metric: str) -> None:
    rng = np.random.default_rng(11)
    data = rng.normal(size=(700, 24))
    index = make_index(service, "pages", metric, data)
    for query in rng.normal(size=(5, 24)):
        answer = call(service, "QueryVectors", query_body(index, query, 15, returnDistance=True))
        assert answer["distanceMetric"] == metric
        expected = brute_force(data, query, metric, 15)
        assert [v["key"] for v in answer["vectors"]] == [key for key, _ in expected]
        np.testing.assert_allclose(
            [v["distance"] for v in answer["vectors"]],
            [d for _, d in expected],
            rtol=1e-6,
            atol=1e-7,
        )
        distances = [v["distance"] for v in answer["vectors"]]
        assert distances == sorted(distances)


def test_distance_definitions(service: S3VectorsService) -> None:
    data = np.array([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0]])
    cosine = make_index(service, "cos", "cosine", data)
    euclidean = make_index(service, "plain", "euclidean", data)
    query = np.array([1.0, 0.0])
    got = call(service, "QueryVectors", query_body(cosine, query, 3, returnDistance=True))
    assert [(v["key"], round(v["distance"], 6)) for v in got["vectors"]] == [
        ("v0", 0.4),  # 1 - 3/5
        ("v1", 1.0),  # orthogonal
        ("v2", 2.0),  # opposite
    ]
    got = call(service, "QueryVectors", query_body(euclidean, query, 3, returnDistance=True))
    assert [(v["key"], round(v["distance"], 6)) for v in got["vectors"]] == [
        ("v2", 2.0),
        ("v1", round(5**0.5, 6)),  # plain L2, not squared
        ("v0", round(20**0.5, 6)),
    ]


def test_results_carry_only_what_was_asked(service: S3VectorsService) -> None:
    data = np.eye(3)
    index = make_index(service, "pages", "euclidean", data)
    bare = call(service, "QueryVectors", query_body(index, data[1], 2))
    assert bare == {"vectors": [{"key": "v1"}, {"key": "v0"}], "distanceMetric": "euclidean"}
    full = call(
        service,
        "QueryVectors",
        query_body(index, data[1], 1, returnMetadata=True, returnDistance=True),
    )
    assert full["vectors"] == [{"key": "v1", "distance": 0.0, "metadata": {"row": 1}}]


def test_queries_see_writes_at_once(service: S3VectorsService) -> None:
    data = np.eye(4)
    index = make_index(service, "pages", "cosine", data)
    newcomer = np.array([0.0, 0.0, 1.0, 0.1])
    call(
        service,
        "PutVectors",
        {**index, "vectors": [{"key": "new", "data": {"float32": newcomer.tolist()}}]},
    )
    assert call(service, "QueryVectors", query_body(index, newcomer, 1))["vectors"] == [
        {"key": "new"}
    ]
    call(service, "DeleteVectors", {**index, "keys": ["new", "v2"]})
    keys = [
        v["key"] for v in call(service, "QueryVectors", query_body(index, newcomer, 10))["vectors"]
    ]
    assert sorted(keys) == ["v0", "v1", "v3"]


FILTER_METADATA: list[dict[str, Any]] = [
    {"genre": "news", "year": 2019, "tags": ["a", "b"], "published": True, "rating": 4.0},
    {"genre": "news", "year": 2021, "tags": ["c"], "published": False, "rating": 3.5},
    {"genre": "sport", "year": 2020, "tags": ["b"], "published": True},
    {"genre": "sport", "year": 2024, "tags": [], "rating": 5},
    {"genre": "newsletter", "year": 2018, "published": True},
    {"year": 2022, "tags": ["a"]},
    {"genre": "film", "year": "2020", "rating": 1},
    {},
]


@pytest.mark.parametrize(
    ("filter_document", "expected_rows"),
    [
        ({}, {0, 1, 2, 3, 4, 5, 6, 7}),
        ({"genre": "news"}, {0, 1}),
        ({"genre": {"$eq": "news"}}, {0, 1}),
        ({"genre": {"$ne": "news"}}, {2, 3, 4, 5, 6, 7}),
        ({"year": {"$gt": 2020}}, {1, 3, 5}),
        ({"year": {"$gte": 2020}}, {1, 2, 3, 5}),
        ({"year": {"$lt": 2020}}, {0, 4}),
        ({"year": {"$lte": 2020}}, {0, 2, 4}),
        ({"year": {"$gte": 2019, "$lte": 2021}}, {0, 1, 2}),
        ({"year": 2020}, {2}),
        ({"year": "2020"}, {6}),
        ({"rating": 4}, {0}),
        ({"rating": {"$gte": 3.5}}, {0, 1, 3}),
        ({"published": True}, {0, 2, 4}),
        ({"published": 1}, set()),
        ({"rating": True}, set()),
        ({"genre": {"$in": ["news", "film"]}}, {0, 1, 6}),
        ({"genre": {"$nin": ["news", "film"]}}, {2, 3, 4, 5, 7}),
        ({"tags": "b"}, {0, 2}),
        ({"tags": {"$in": ["a", "c"]}}, {0, 1, 5}),
        ({"tags": {"$nin": ["a"]}}, {1, 2, 3, 4, 6, 7}),
        ({"tags": {"$ne": "b"}}, {1, 3, 4, 5, 6, 7}),
        ({"tags": {"$exists": True}}, {0, 1, 2, 3, 5}),
        ({"genre": {"$exists": False}}, {5, 7}),
        ({"genre": {"$startsWith": "news"}}, {0, 1, 4}),
        ({"genre": "news", "published": True}, {0}),
        ({"$and": [{"genre": "sport"}, {"year": {"$gt": 2020}}]}, {3}),
        ({"$or": [{"genre": "film"}, {"tags": "c"}]}, {1, 6}),
        (
            {"$or": [{"$and": [{"genre": "news"}, {"year": 2019}]}, {"genre": {"$exists": False}}]},
            {0, 5, 7},
        ),
        ({"$and": [{"$or": [{"year": 2018}, {"year": 2024}]}], "rating": 5}, {3}),
    ],
)
def test_filter_grammar(
    service: S3VectorsService, filter_document: dict[str, Any], expected_rows: set[int]
) -> None:
    data = np.random.default_rng(3).normal(size=(len(FILTER_METADATA), 4))
    index = make_index(
        service,
        "pages",
        "cosine",
        data,
        FILTER_METADATA,
        metadataConfiguration={"nonFilterableMetadataKeys": ["text"]},
    )
    body = query_body(index, data[0], 100, filter=filter_document)
    keys = {v["key"] for v in call(service, "QueryVectors", body)["vectors"]}
    assert keys == {f"v{row}" for row in expected_rows}


@pytest.mark.parametrize(
    ("filter_document", "fragment"),
    [
        ([{"genre": "news"}], "filter must be a JSON object"),
        ({"year": {"$regex": "20.*"}}, "unknown operator '$regex' for key 'year'"),
        ({"$not": {"genre": "news"}}, "unknown logical operator '$not'"),
        ({"$and": []}, "'$and' in filter needs a non-empty array"),
        ({"$or": {"genre": "news"}}, "'$or' in filter needs a non-empty array"),
        ({"$or": ["news"]}, "$or[0] must be a JSON object"),
        ({"genre": None}, "$eq on key 'genre' needs a string, number or boolean"),
        ({"genre": ["news", "sport"]}, "$eq on key 'genre' needs a string, number or boolean"),
        ({"genre": {"kind": "news"}}, "unknown operator 'kind'"),
        ({"genre": {}}, "the operator object for key 'genre' is empty"),
        ({"year": {"$gt": "2020"}}, "$gt on key 'year' needs a number"),
        ({"year": {"$lte": True}}, "$lte on key 'year' needs a number"),
        ({"genre": {"$in": []}}, "$in on key 'genre' needs a non-empty array"),
        ({"genre": {"$nin": "news"}}, "$nin on key 'genre' needs a non-empty array"),
        ({"genre": {"$in": [{"a": 1}]}}, "$in on key 'genre' needs"),
        ({"genre": {"$exists": "yes"}}, "$exists on key 'genre' needs a boolean"),
        ({"genre": {"$startsWith": 5}}, "$startsWith on key 'genre' needs a string"),
        ({"text": "hello"}, "metadata key 'text' is non-filterable"),
        ({"$or": [{"year": 1}, {"text": {"$exists": True}}]}, "'text' is non-filterable"),
        ({"": 1}, "metadata key names must not be empty"),
        ({"genre": {"$in": [str(i) for i in range(101)]}}, "101 constraints; at most 100"),
    ],
)
def test_malformed_filters_are_validation_errors(
    service: S3VectorsService, filter_document: Any, fragment: str
) -> None:
    data = np.eye(3)
    index = make_index(
        service,
        "pages",
        "cosine",
        data,
        metadataConfiguration={"nonFilterableMetadataKeys": ["text"]},
    )
    error = expect_error(
        service,
        query_body(index, data[0], 3, filter=filter_document),
        "ValidationException",
        400,
        fragment,
    )
    assert error.message.startswith("Invalid filter: ")


def test_a_hundred_constraints_are_accepted(service: S3VectorsService) -> None:
    data = np.eye(3)
    index = make_index(service, "pages", "cosine", data)
    filter_document = {"row": {"$in": list(range(99))}, "other": {"$exists": False}}
    answer = call(service, "QueryVectors", query_body(index, data[0], 3, filter=filter_document))
    assert len(answer["vectors"]) == 3


@pytest.mark.parametrize(
    ("change", "code", "status", "fragment"),
    [
        ({"topK": 0}, "ValidationException", 400, "topK must be between 1 and 10000"),
        ({"topK": 10001}, "ValidationException", 400, "topK must be between 1 and 10000"),
        ({"topK": "5"}, "ValidationException", 400, "topK must be a JSON number"),
        ({"topK": None}, "ValidationException", 400, "topK is required"),
        ({"queryVector": None}, "ValidationException", 400, "queryVector is required"),
        (
            {"queryVector": {"float32": [1.0, 0.0]}},
            "ValidationException",
            400,
            "must have length 3",
        ),
        ({"queryVector": {"float32": [1.0, float("nan"), 0.0]}}, "ValidationException", 400, "NaN"),
        (
            {"queryVector": {"float32": [float("inf"), 0, 0]}},
            "ValidationException",
            400,
            "Infinity",
        ),
        ({"queryVector": {"float32": [0.0, 0.0, 0.0]}}, "ValidationException", 400, "all zeros"),
        ({"queryVector": [1.0, 0.0, 0.0]}, "ValidationException", 400, "Invalid query vector"),
        (
            {"queryTexts": [{"text": "cats", "metadataKey": "text"}]},
            "ValidationException",
            400,
            "Metadata key 'text' is not full-text searchable",
        ),
        ({"queryMode": "FAST"}, "ValidationException", 400, "queryMode must be one of"),
        (
            {"queryMode": "CLASSIC"},
            "ValidationException",
            400,
            "cannot be used on an ENHANCED index",
        ),
        (
            {"returnDistance": 1},
            "ValidationException",
            400,
            "returnDistance must be a JSON boolean",
        ),
        ({"nextToken": "bm9wZQ"}, "ValidationException", 400, "nextToken is not a token"),
        ({"indexName": "absent"}, "NotFoundException", 404, "Index 'absent' does not exist"),
    ],
)
def test_query_rules(
    service: S3VectorsService, change: dict[str, Any], code: str, status: int, fragment: str
) -> None:
    data = np.eye(3)
    index = make_index(service, "pages", "cosine", data)
    body = {k: v for k, v in {**query_body(index, data[0], 2), **change}.items() if v is not None}
    expect_error(service, body, code, status, fragment)


def test_top_k_of_ten_thousand_is_accepted(service: S3VectorsService) -> None:
    data = np.random.default_rng(5).normal(size=(50, 3))
    index = make_index(service, "pages", "euclidean", data)
    answer = call(service, "QueryVectors", query_body(index, data[0], 10_000))
    assert len(answer["vectors"]) == 50
    assert "nextToken" not in answer


def collect_pages(service: S3VectorsService, body: dict[str, Any]) -> list[dict[str, Any]]:
    pages = [call(service, "QueryVectors", body)]
    while "nextToken" in pages[-1]:
        pages.append(call(service, "QueryVectors", {**body, "nextToken": pages[-1]["nextToken"]}))
    return pages


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_top_250_in_three_pages_equals_the_exact_top_250(
    service: S3VectorsService, metric: str
) -> None:
    rng = np.random.default_rng(21)
    data = rng.normal(size=(1200, 16))
    index = make_index(service, "pages", metric, data)
    query = rng.normal(size=16)
    pages = collect_pages(service, query_body(index, query, 250, returnDistance=True))
    assert [len(page["vectors"]) for page in pages] == [100, 100, 50]
    assert all(page["distanceMetric"] == metric for page in pages)
    paged = [(v["key"], v["distance"]) for page in pages for v in page["vectors"]]
    single = call(service, "QueryVectors", query_body(index, query, 250, returnDistance=True))
    assert single["vectors"] == pages[0]["vectors"]
    expected = brute_force(data, query, metric, 250)
    assert [key for key, _ in paged] == [key for key, _ in expected]
    np.testing.assert_allclose(
        [d for _, d in paged], [d for _, d in expected], rtol=1e-6, atol=1e-7
    )


def test_continuation_must_repeat_the_same_query(service: S3VectorsService) -> None:
    rng = np.random.default_rng(8)
    data = rng.normal(size=(300, 4))
    index = make_index(service, "pages", "cosine", data)
    body = query_body(index, data[0], 200, filter={"row": {"$gte": 0}})
    token = call(service, "QueryVectors", body)["nextToken"]
    different = [
        {**body, "topK": 201},
        {**body, "queryVector": {"float32": data[1].tolist()}},
        {**body, "filter": {"row": {"$gte": 1}}},
        {**body, "queryMode": "ENHANCED"},
    ]
    for changed in different:
        expect_error(
            service, {**changed, "nextToken": token}, "ValidationException", 400, "same queryVector"
        )
    listing_token = call(service, "ListVectors", {**index, "maxResults": 1})["nextToken"]
    expect_error(
        service, {**body, "nextToken": listing_token}, "ValidationException", 400, "nextToken"
    )
    second = call(service, "QueryVectors", {**body, "nextToken": token, "returnMetadata": True})
    assert len(second["vectors"]) == 100
    assert "metadata" in second["vectors"][0]


def clustered(
    seed: int, count: int, dimension: int, clusters: int, spread: float
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, dimension))
    data = centers[rng.integers(clusters, size=count)] + spread * rng.normal(
        size=(count, dimension)
    )
    queries = centers[rng.integers(clusters, size=40)] + 1.5 * spread * rng.normal(
        size=(40, dimension)
    )
    return data, queries


APPROXIMATE = SearchSettings(mode="approximate", partitions=16, probe=2, seed=1)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_approximate_recall_is_below_one_but_useful(metric: str) -> None:
    data, queries = clustered(seed=7, count=3000, dimension=32, clusters=24, spread=1.0)
    exact = S3VectorsService(None, enforce_write_limits=False)
    approximate = S3VectorsService(None, enforce_write_limits=False, search=APPROXIMATE)
    index = make_index(exact, "pages", metric, data)
    make_index(approximate, "pages", metric, data)
    recalls = []
    for query in queries:
        body = query_body(index, query, 10)
        truth = {v["key"] for v in call(exact, "QueryVectors", body)["vectors"]}
        found = [v["key"] for v in call(approximate, "QueryVectors", body)["vectors"]]
        assert len(found) == 10
        recalls.append(len(truth & set(found)) / 10)
    recall = float(np.mean(recalls))
    assert 0.3 < recall < 1.0


def test_approximate_search_keeps_up_with_writes() -> None:
    data, _ = clustered(seed=3, count=1000, dimension=8, clusters=10, spread=0.5)
    service = S3VectorsService(None, enforce_write_limits=False, search=APPROXIMATE)
    index = make_index(service, "pages", "euclidean", data)
    call(service, "QueryVectors", query_body(index, data[0], 5))  # builds the lists
    newcomers = data[:50] + 0.01
    vectors = [
        {"key": f"new{i}", "data": {"float32": row.tolist()}} for i, row in enumerate(newcomers)
    ]
    call(service, "PutVectors", {**index, "vectors": vectors})
    for i in (0, 17, 49):
        top = call(service, "QueryVectors", query_body(index, newcomers[i], 1))["vectors"]
        assert top == [{"key": f"new{i}"}]
    # Deleting 600 of the 1050 vectors makes the next query rebuild the lists.
    for start in (0, 300):
        deleted = [f"v{i}" for i in range(start, start + 300)]
        call(service, "DeleteVectors", {**index, "keys": deleted})
    keys = [
        v["key"] for v in call(service, "QueryVectors", query_body(index, data[5], 20))["vectors"]
    ]
    assert len(keys) == 20
    assert not any(key.startswith("v") and int(key[1:]) < 600 for key in keys)
    service.close()


def test_small_indexes_are_searched_exactly() -> None:
    rng = np.random.default_rng(4)
    data = rng.normal(size=(60, 6))  # fewer than 4 x 16 partitions
    service = S3VectorsService(None, enforce_write_limits=False, search=APPROXIMATE)
    index = make_index(service, "pages", "cosine", data)
    for query in rng.normal(size=(5, 6)):
        keys = [
            v["key"] for v in call(service, "QueryVectors", query_body(index, query, 10))["vectors"]
        ]
        assert keys == [key for key, _ in brute_force(data, query, "cosine", 10)]
    service.close()


def test_classic_filters_in_the_probed_lists_and_enhanced_prefilters() -> None:
    data, queries = clustered(seed=9, count=2000, dimension=16, clusters=16, spread=1.0)
    rng = np.random.default_rng(2)
    rare_rows = set(rng.choice(2000, size=40, replace=False).tolist())
    metadata = [{"rare": i in rare_rows, "label": f"item-{i}"} for i in range(2000)]
    service = S3VectorsService(None, enforce_write_limits=False, search=APPROXIMATE)
    enhanced = make_index(service, "enhanced", "euclidean", data, metadata)
    call(service, "PutVectorBucketDefaultIndexMode", {**BUCKET, "defaultIndexMode": "CLASSIC"})
    classic = make_index(service, "classic", "euclidean", data, metadata)

    short_answers = 0
    for query in queries[:10]:
        body = query_body(enhanced, query, 10, filter={"rare": True}, returnMetadata=True)
        enhanced_hits = call(service, "QueryVectors", body)["vectors"]
        assert len(enhanced_hits) == 10
        assert all(hit["metadata"]["rare"] for hit in enhanced_hits)

        classic_body = {**body, **classic}
        classic_hits = call(service, "QueryVectors", classic_body)["vectors"]
        assert all(hit["metadata"]["rare"] for hit in classic_hits)
        short_answers += len(classic_hits) < 10

        per_query = call(service, "QueryVectors", {**classic_body, "queryMode": "ENHANCED"})
        assert len(per_query["vectors"]) == 10
    assert short_answers > 0

    unfiltered = call(service, "QueryVectors", query_body(classic, queries[0], 10))["vectors"]
    assert len(unfiltered) == 10
    starts_with = {"label": {"$startsWith": "item-1"}}
    expect_error(
        service,
        query_body(classic, queries[0], 5, filter=starts_with),
        "ValidationException",
        400,
        "$startsWith is supported only on ENHANCED indexes",
    )
    hits = call(
        service,
        "QueryVectors",
        query_body(
            classic, queries[0], 5, filter=starts_with, queryMode="ENHANCED", returnMetadata=True
        ),
    )["vectors"]
    assert len(hits) == 5
    assert all(hit["metadata"]["label"].startswith("item-1") for hit in hits)
    service.close()


def test_classic_filters_are_exact_in_exact_mode(service: S3VectorsService) -> None:
    data = np.random.default_rng(6).normal(size=(400, 8))
    metadata = [{"even": i % 2 == 0} for i in range(400)]
    call(service, "CreateVectorBucket", BUCKET)
    call(service, "PutVectorBucketDefaultIndexMode", {**BUCKET, "defaultIndexMode": "CLASSIC"})
    index = make_index(service, "classic", "cosine", data, metadata)
    body = query_body(index, data[1], 20, filter={"even": True})
    keys = [v["key"] for v in call(service, "QueryVectors", body)["vectors"]]
    expected = [
        key for key, _ in brute_force(data, data[1], "cosine", 400) if int(key[1:]) % 2 == 0
    ]
    assert keys == expected[:20]
