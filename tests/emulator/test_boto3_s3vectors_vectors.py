"""S3 Vectors stand-in through real boto3 clients over HTTP: putting, reading, listing and querying
vectors, their paginators, request validation, the per-index write limit, retries of injected
faults and persistence across a restart (aws-apis.md §2).

The stand-in is shared by the whole session, so every index lives in a uniquely named bucket.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from emulator.app import Emulator, EmulatorSettings
from emulator.misbehaviour import Misbehaviour
from tests.emulator.vector_index_helpers import IndexRef

POPULATION = 1200
POPULATION_DIMENSION = 16
GENRES = ("jazz", "rock", "folk")
SERVER_ERROR_STATUS = {"InternalServerException": 500, "ServiceUnavailableException": 503}


@dataclass(frozen=True)
class PopulatedIndex:
    """A cosine index holding ``keys[i]`` → ``data[i]`` (float32) with ``metadata[i]``."""

    index: IndexRef
    keys: list[str]
    data: np.ndarray
    metadata: list[dict[str, Any]]


def create_index(
    client: BaseClient, *, metric: str = "cosine", dimension: int = 4, prefix: str = "vectors"
) -> IndexRef:
    """A new bucket holding one float32 index with ``body`` declared non-filterable."""
    bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client.create_vector_bucket(vectorBucketName=bucket)
    answer = client.create_index(
        vectorBucketName=bucket,
        indexName="index",
        dataType="float32",
        dimension=dimension,
        distanceMetric=metric,
        metadataConfiguration={"nonFilterableMetadataKeys": ["body"]},
    )
    return IndexRef(bucket, "index", answer["indexArn"])


def put_in_batches(client: BaseClient, index: IndexRef, vectors: list[dict[str, Any]]) -> None:
    """PutVectors in batches of the maximum 500."""
    for start in range(0, len(vectors), 500):
        client.put_vectors(**index.address(), vectors=vectors[start : start + 500])


def random_batch(
    rng: np.random.Generator, count: int, dimension: int, tag: str
) -> list[dict[str, Any]]:
    """``count`` PutVectors records with keys ``{tag}-{n}`` and seeded random data."""
    data = rng.standard_normal((count, dimension)).astype(np.float32)
    return [{"key": f"{tag}-{n}", "data": {"float32": row.tolist()}} for n, row in enumerate(data)]


def brute_force_nearest(
    data: np.ndarray, keys: list[str], query: np.ndarray, metric: str, top_k: int
) -> list[tuple[str, float]]:
    """Exact (key, distance) of the ``top_k`` rows nearest to ``query``, nearest first: cosine is
    1 − cosine similarity, euclidean the L2 distance, both in float64 of the float32 values."""
    rows = data.astype(np.float32).astype(np.float64)
    target = query.astype(np.float32).astype(np.float64)
    if metric == "cosine":
        distances = 1.0 - rows @ target / (np.linalg.norm(rows, axis=1) * np.linalg.norm(target))
    else:
        distances = np.linalg.norm(rows - target, axis=1)
    ranked = sorted(zip(distances.tolist(), keys, strict=True), key=lambda pair: pair[:2])
    return [(key, distance) for distance, key in ranked[:top_k]]


def assert_service_error(error: ClientError, code: str, status: int, fragment: str) -> None:
    """Check the error code botocore parsed, the HTTP status and a fragment of the message."""
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert fragment in error.response["Error"]["Message"]


def all_listed_keys(client: BaseClient, index: IndexRef, **options: Any) -> list[str]:
    """Every key ListVectors returns for ``index`` through the paginator."""
    pages = client.get_paginator("list_vectors").paginate(**index.address(), **options)
    return [vector["key"] for page in pages for vector in page["vectors"]]


@pytest.fixture(scope="module")
def populated(emulator: Emulator) -> PopulatedIndex:
    """1,200 seeded 16-dimensional vectors with genre/year metadata and a non-filterable body."""
    client = emulator.client("s3vectors", retries={"mode": "standard"})
    index = create_index(client, dimension=POPULATION_DIMENSION, prefix="populated")
    rng = np.random.default_rng(20261121)
    data = rng.standard_normal((POPULATION, POPULATION_DIMENSION)).astype(np.float32)
    keys = [f"doc-{n:04d}#page={n % 7}" for n in range(POPULATION)]
    metadata = [
        {"genre": GENRES[n % 3], "year": int(rng.integers(1980, 2021)), "body": f"text {n}"}
        for n in range(POPULATION)
    ]
    records = [
        {"key": key, "data": {"float32": row.tolist()}, "metadata": meta}
        for key, row, meta in zip(keys, data, metadata, strict=True)
    ]
    put_in_batches(client, index, records)
    return PopulatedIndex(index, keys, data, metadata)


# Success paths


def test_put_get_list_delete_round_trip(s3vectors: BaseClient) -> None:
    index = create_index(s3vectors)
    vectors = [
        {"key": "doc-1#page=1", "data": {"float32": [0.1, 0.2, 0.3, 0.4]}, "metadata": {"n": 1}},
        {"key": "ü/ñ?x=1&y", "data": {"float32": [1, -2, 3, -4]}, "metadata": {"tags": ["a"]}},
    ]
    put = s3vectors.put_vectors(**index.address(), vectors=vectors)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    got = s3vectors.get_vectors(
        indexArn=index.arn,
        keys=["ü/ñ?x=1&y", "missing", "doc-1#page=1"],
        returnData=True,
        returnMetadata=True,
    )["vectors"]
    stored_first = np.asarray([0.1, 0.2, 0.3, 0.4], dtype=np.float32).tolist()
    assert got == [
        {
            "key": "ü/ñ?x=1&y",
            "data": {"float32": [1.0, -2.0, 3.0, -4.0]},
            "metadata": {"tags": ["a"]},
        },
        {"key": "doc-1#page=1", "data": {"float32": stored_first}, "metadata": {"n": 1}},
    ]
    bare = s3vectors.get_vectors(**index.address(), keys=["doc-1#page=1"])["vectors"]
    assert bare == [{"key": "doc-1#page=1"}]

    # A put with an existing key replaces the whole vector, metadata included.
    replacement = {"key": "doc-1#page=1", "data": {"float32": [4.0, 3.0, 2.0, 1.0]}}
    s3vectors.put_vectors(indexArn=index.arn, vectors=[replacement])
    listed = s3vectors.list_vectors(**index.address(), returnData=True, returnMetadata=True)
    assert {v["key"]: (v["data"]["float32"], v["metadata"]) for v in listed["vectors"]} == {
        "doc-1#page=1": ([4.0, 3.0, 2.0, 1.0], {}),
        "ü/ñ?x=1&y": ([1.0, -2.0, 3.0, -4.0], {"tags": ["a"]}),
    }
    assert "nextToken" not in listed

    s3vectors.delete_vectors(**index.address(), keys=["doc-1#page=1", "never-put"])
    assert all_listed_keys(s3vectors, index) == ["ü/ñ?x=1&y"]


def test_cosine_query_with_filter_distance_and_metadata(
    s3vectors: BaseClient, populated: PopulatedIndex
) -> None:
    query = np.random.default_rng(1).standard_normal(POPULATION_DIMENSION).astype(np.float32)
    query_filter = {"$and": [{"genre": {"$in": ["jazz", "rock"]}}, {"year": {"$gte": 2000}}]}
    answer = s3vectors.query_vectors(
        **populated.index.address(),
        topK=10,
        queryVector={"float32": query.tolist()},
        filter=query_filter,
        returnDistance=True,
        returnMetadata=True,
    )
    matching = [
        n
        for n, meta in enumerate(populated.metadata)
        if meta["genre"] in ("jazz", "rock") and meta["year"] >= 2000
    ]
    expected = brute_force_nearest(
        populated.data[matching], [populated.keys[n] for n in matching], query, "cosine", 10
    )
    assert answer["distanceMetric"] == "cosine"
    assert [v["key"] for v in answer["vectors"]] == [key for key, _ in expected]
    for vector, (key, distance) in zip(answer["vectors"], expected, strict=True):
        assert vector["distance"] == pytest.approx(distance, rel=1e-6, abs=1e-9)
        # The non-filterable body comes back with the rest of the metadata.
        assert vector["metadata"] == populated.metadata[populated.keys.index(key)]


def test_euclidean_query_distances_and_bare_results(s3vectors: BaseClient) -> None:
    index = create_index(s3vectors, metric="euclidean", dimension=8)
    records = random_batch(np.random.default_rng(2), 60, 8, "e")
    s3vectors.put_vectors(**index.address(), vectors=records)
    data = np.asarray([r["data"]["float32"] for r in records], dtype=np.float32)
    query = np.zeros(8, dtype=np.float32)  # allowed on euclidean indexes
    expected = brute_force_nearest(data, [r["key"] for r in records], query, "euclidean", 5)

    answer = s3vectors.query_vectors(
        indexArn=index.arn, topK=5, queryVector={"float32": query.tolist()}, returnDistance=True
    )
    assert answer["distanceMetric"] == "euclidean"
    assert [(v["key"], v["distance"]) for v in answer["vectors"]] == [
        (key, pytest.approx(distance, rel=1e-6)) for key, distance in expected
    ]
    bare = s3vectors.query_vectors(indexArn=index.arn, topK=5, queryVector={"float32": [0.0] * 8})
    assert bare["vectors"] == [{"key": key} for key, _ in expected]


# Paginators


def test_list_vectors_paginator_returns_every_key_once(
    s3vectors: BaseClient, populated: PopulatedIndex
) -> None:
    pages = list(
        s3vectors.get_paginator("list_vectors").paginate(
            **populated.index.address(), PaginationConfig={"PageSize": 100}
        )
    )
    assert [len(page["vectors"]) for page in pages] == [100] * 12
    keys = [vector["key"] for page in pages for vector in page["vectors"]]
    assert sorted(keys) == sorted(populated.keys)


def test_list_vectors_segments_partition_the_index(
    s3vectors: BaseClient, populated: PopulatedIndex
) -> None:
    segments = [
        all_listed_keys(s3vectors, populated.index, segmentCount=4, segmentIndex=n, maxResults=150)
        for n in range(4)
    ]
    assert all(segments)
    union = [key for segment in segments for key in segment]
    assert len(union) == len(set(union)) == POPULATION
    assert set(union) == set(populated.keys)


def test_query_vectors_paginator_top_250_equals_brute_force(
    s3vectors: BaseClient, populated: PopulatedIndex
) -> None:
    query = np.random.default_rng(3).standard_normal(POPULATION_DIMENSION).astype(np.float32)
    pages = list(
        s3vectors.get_paginator("query_vectors").paginate(
            **populated.index.address(),
            topK=250,
            queryVector={"float32": query.tolist()},
            returnDistance=True,
        )
    )
    assert [len(page["vectors"]) for page in pages] == [100, 100, 50]
    assert {page["distanceMetric"] for page in pages} == {"cosine"}
    results = [vector for page in pages for vector in page["vectors"]]
    distances = [vector["distance"] for vector in results]
    assert distances == sorted(distances)
    expected = brute_force_nearest(populated.data, populated.keys, query, "cosine", 250)
    assert [vector["key"] for vector in results] == [key for key, _ in expected]
    assert distances == pytest.approx([distance for _, distance in expected], rel=1e-6, abs=1e-9)


# Validation errors


@dataclass(frozen=True)
class RefusedRequest:
    """A request the stand-in must refuse with ValidationException: ``send`` makes it on the
    validation index, ``fragment`` is part of the message, ``field`` the ``fieldList`` path."""

    name: str
    send: Callable[[BaseClient, Mapping[str, str]], object]
    fragment: str
    field: str


def _put(client: BaseClient, index: Mapping[str, str], *records: dict[str, Any]) -> object:
    """PutVectors of ``records`` into ``index``."""
    return client.put_vectors(**index, vectors=list(records))


def _record(key: str = "k", data: list[float] | None = None, **metadata: Any) -> dict[str, Any]:
    """One PutVectors record of the 4-dimensional validation index."""
    return {"key": key, "data": {"float32": data or [1.0, 2.0, 3.0, 4.0]}, "metadata": metadata}


def _query(client: BaseClient, index: Mapping[str, str], **members: Any) -> object:
    """QueryVectors on ``index`` with a valid query vector unless ``members`` replace it."""
    defaults = {"topK": 3, "queryVector": {"float32": [1.0] * 4}}
    return client.query_vectors(**index, **{**defaults, **members})


REFUSED_REQUESTS = [
    RefusedRequest(
        "put-501-vectors",
        lambda c, i: _put(c, i, *(_record(f"k{n}") for n in range(501))),
        "vectors must have between 1 and 500 items, got 501",
        "vectors",
    ),
    RefusedRequest(
        "get-101-keys",
        lambda c, i: c.get_vectors(**i, keys=[f"k{n}" for n in range(101)]),
        "keys must have between 1 and 100 items, got 101",
        "keys",
    ),
    RefusedRequest(
        "dimension-mismatch",
        lambda c, i: _put(c, i, _record(data=[1.0, 2.0, 3.0])),
        "vector must have length 4, but has length 3",
        "vectors",
    ),
    RefusedRequest(
        "nan-in-vector",
        lambda c, i: _put(c, i, _record(data=[1.0, float("nan"), 3.0, 4.0])),
        "Invalid record for key 'k'",
        "vectors",
    ),
    RefusedRequest(
        "zero-vector-on-cosine",
        lambda c, i: _put(c, i, _record(data=[0.0, 0.0, 0.0, 0.0])),
        "must not be all zeros for an index using the cosine metric",
        "vectors",
    ),
    RefusedRequest(
        "zero-query-on-cosine",
        lambda c, i: _query(c, i, queryVector={"float32": [0.0] * 4}),
        "must not be all zeros",
        "queryVector",
    ),
    RefusedRequest(
        "filterable-metadata-over-2-kb",
        lambda c, i: _put(c, i, _record(title="x" * 2100)),
        "filterable metadata is 2112 bytes; at most 2048 allowed",
        "vectors",
    ),
    RefusedRequest(
        "metadata-over-40-kb",
        lambda c, i: _put(c, i, _record(body="x" * 41_000)),
        "metadata is 41011 bytes; at most 40960 allowed",
        "vectors",
    ),
    RefusedRequest(
        "51-metadata-keys",
        lambda c, i: _put(c, i, _record(**{f"key{n}": n for n in range(51)})),
        "metadata has 51 keys; at most 50 allowed",
        "vectors",
    ),
    RefusedRequest(
        "unknown-filter-operator",
        lambda c, i: _query(c, i, filter={"genre": {"$regex": "ja.*"}}),
        "unknown operator '$regex' for key 'genre'",
        "filter",
    ),
    RefusedRequest(
        "filter-on-non-filterable-key",
        lambda c, i: _query(c, i, filter={"body": "text"}),
        "metadata key 'body' is non-filterable",
        "filter",
    ),
    RefusedRequest(
        "top-k-10001",
        lambda c, i: _query(c, i, topK=10_001),
        "topK must be between 1 and 10000, got 10001",
        "topK",
    ),
]


@pytest.fixture(scope="module")
def validation_index(emulator: Emulator) -> dict[str, str]:
    """A 4-dimensional cosine index (``body`` non-filterable) that refused requests leave empty."""
    client = emulator.client("s3vectors", retries={"mode": "standard"})
    return create_index(client, prefix="refusals").address()


@pytest.mark.parametrize("request_", REFUSED_REQUESTS, ids=[r.name for r in REFUSED_REQUESTS])
def test_invalid_requests_are_validation_exceptions_400(
    s3vectors: BaseClient, validation_index: dict[str, str], request_: RefusedRequest
) -> None:
    with pytest.raises(s3vectors.exceptions.ValidationException) as caught:
        request_.send(s3vectors, validation_index)
    assert_service_error(caught.value, "ValidationException", 400, request_.fragment)
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 0
    [field] = caught.value.response["fieldList"]
    assert field["path"] == request_.field
    assert request_.fragment in field["message"]
    assert s3vectors.list_vectors(**validation_index)["vectors"] == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_named_in_the_message(
    s3vectors: BaseClient, validation_index: dict[str, str], value: float
) -> None:
    with pytest.raises(s3vectors.exceptions.ValidationException) as caught:
        _put(s3vectors, validation_index, _record(data=[1.0, value, 3.0, 4.0]))
    assert_service_error(caught.value, "ValidationException", 400, "NaN or Infinity")


# Write limit, retries and injected faults


def drain_write_budget(client: BaseClient, index: IndexRef, rng: np.random.Generator) -> int:
    """PutVectors of 500 vectors until one is throttled; returns how many were accepted first.
    Fails if 20 puts (10,000 vectors) all pass."""
    for put in range(20):
        try:
            client.put_vectors(**index.address(), vectors=random_batch(rng, 500, 4, f"p{put}"))
        except client.exceptions.TooManyRequestsException as error:
            assert_service_error(error, "TooManyRequestsException", 429, "Write rate exceeded")
            return put
    pytest.fail("20 puts of 500 vectors were never throttled")


@pytest.fixture
def frozen_stand_in() -> Iterator[tuple[Emulator, list[float]]]:
    """A stand-in of its own whose write-rate clock moves only when the test moves it."""
    now = [1000.0]
    with Emulator(EmulatorSettings(vectors_clock=lambda: now[0])) as running:
        yield running, now


def test_write_limit_answers_429_and_refuses_the_whole_batch(
    frozen_stand_in: tuple[Emulator, list[float]],
) -> None:
    stand_in, now = frozen_stand_in
    single_attempt = stand_in.client(
        "s3vectors", retries={"mode": "standard", "total_max_attempts": 1}
    )
    index = create_index(single_attempt)
    stand_in.reset_stats()
    accepted = drain_write_budget(single_attempt, index, np.random.default_rng(4))
    assert accepted == 5  # one second's worth: 2,500 vectors
    stats = stand_in.stats()["s3vectors"]
    assert stats["calls"]["PutVectors"] == accepted + 1
    assert stats["errors"]["PutVectors"] == {"TooManyRequestsException": 1}
    assert len(all_listed_keys(single_attempt, index)) == accepted * 500
    now[0] += 0.2  # 500 vectors' worth of budget comes back
    single_attempt.put_vectors(
        **index.address(), vectors=random_batch(np.random.default_rng(6), 500, 4, "later")
    )


def test_standard_retry_mode_retries_the_write_limit_429(
    frozen_stand_in: tuple[Emulator, list[float]],
) -> None:
    stand_in, _ = frozen_stand_in
    single_attempt = stand_in.client(
        "s3vectors", retries={"mode": "standard", "total_max_attempts": 1}
    )
    retrying = stand_in.client("s3vectors", retries={"mode": "standard", "total_max_attempts": 3})
    index = create_index(single_attempt)
    rng = np.random.default_rng(5)
    drain_write_budget(single_attempt, index, rng)
    stand_in.reset_stats()
    with pytest.raises(retrying.exceptions.TooManyRequestsException) as raised:
        retrying.put_vectors(**index.address(), vectors=random_batch(rng, 500, 4, "retried"))
    assert raised.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    stats = stand_in.stats()["s3vectors"]
    assert stats["calls"]["PutVectors"] == 3
    assert stats["errors"]["PutVectors"] == {"TooManyRequestsException": 3}


@pytest.fixture
def queried_index(emulator: Emulator) -> Iterator[IndexRef]:
    """An index with one vector. Requested before ``stand_in``, it is torn down after it, and
    then checks that ``stand_in`` restored good behaviour: one plain query attempt succeeds."""
    client = emulator.client("s3vectors", retries={"mode": "standard", "total_max_attempts": 1})
    index = create_index(client)
    client.put_vectors(**index.address(), vectors=[_record("only")])
    yield index
    answer = client.query_vectors(indexArn=index.arn, topK=1, queryVector={"float32": [1.0] * 4})
    assert answer["vectors"] == [{"key": "only"}]


def test_server_errors_on_query_are_tried_three_times(
    queried_index: IndexRef, stand_in: Emulator, s3vectors: BaseClient
) -> None:
    rule = Misbehaviour(operations=frozenset({"QueryVectors"}), server_error_rate=1.0, seed=11)
    stand_in.configure(s3vectors_faults=(rule,))
    server_errors = (
        s3vectors.exceptions.InternalServerException,
        s3vectors.exceptions.ServiceUnavailableException,
    )
    with pytest.raises(server_errors) as caught:
        s3vectors.query_vectors(
            indexArn=queried_index.arn, topK=1, queryVector={"float32": [1.0] * 4}
        )
    code = caught.value.response["Error"]["Code"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == SERVER_ERROR_STATUS[code]
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    stats = stand_in.stats()["s3vectors"]
    assert stats["calls"]["QueryVectors"] == 3
    assert sum(stats["errors"]["QueryVectors"].values()) == 3
    assert set(stats["errors"]["QueryVectors"]) <= set(SERVER_ERROR_STATUS)
    # Operations the rule does not name are served as usual.
    assert s3vectors.get_index(indexArn=queried_index.arn)["index"]["indexName"] == "index"


# Persistence


def test_an_index_survives_a_restart_on_the_same_state_dir(tmp_path: Path) -> None:
    settings = EmulatorSettings(state_dir=tmp_path)
    records = random_batch(np.random.default_rng(6), 40, 4, "kept")
    for n, record in enumerate(records):
        record["metadata"] = {"position": n, "body": f"page {n}"}
    query = {"topK": 5, "queryVector": records[7]["data"], "returnDistance": True}
    with Emulator(settings) as first:
        client = first.client("s3vectors", retries={"mode": "standard"})
        index = create_index(client)
        client.put_vectors(**index.address(), vectors=records)
        client.delete_vectors(**index.address(), keys=["kept-0"])
        before = client.query_vectors(**index.address(), **query, returnMetadata=True)["vectors"]
        described = client.get_index(indexArn=index.arn)["index"]
    with Emulator(settings) as second:
        client = second.client("s3vectors", retries={"mode": "standard"})
        after = client.query_vectors(**index.address(), **query, returnMetadata=True)["vectors"]
        assert after == before
        assert after[0]["key"] == "kept-7"
        assert after[0]["distance"] == pytest.approx(0.0, abs=1e-6)
        assert after[0]["metadata"] == records[7]["metadata"]
        assert client.get_index(indexArn=index.arn)["index"] == described
        assert sorted(all_listed_keys(client, index)) == sorted(r["key"] for r in records[1:])
