"""S3 Vectors stand-in: PutVectors, GetVectors, ListVectors and DeleteVectors, their limits,
persistence across a restart and the per-index write-rate limits."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emulator.errors import ServiceError
from emulator.s3vectors import S3VectorsService

INDEX = {"vectorBucketName": "media", "indexName": "pages"}
EUCLIDEAN_INDEX = {"vectorBucketName": "media", "indexName": "plain"}
DIMENSION = 4


def call(service: S3VectorsService, operation: str, body: Mapping[str, Any]) -> dict[str, Any]:
    return service.handle(operation, body, {}, {})


def expect_error(
    service: S3VectorsService,
    operation: str,
    body: Mapping[str, Any],
    code: str,
    status: int,
    fragment: str,
) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call(service, operation, body)
    error = caught.value
    assert (error.code, error.status) == (code, status)
    assert fragment in error.message
    return error


def vector(key: str, values: list[float] | None = None, **metadata: Any) -> dict[str, Any]:
    data = values if values is not None else [1.0, 0.5, 0.25, 0.125]
    record: dict[str, Any] = {"key": key, "data": {"float32": data}}
    if metadata:
        record["metadata"] = metadata
    return record


def random_vectors(count: int, seed: int = 0, prefix: str = "doc") -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "key": f"{prefix}-{i}",
            "data": {"float32": rng.normal(size=DIMENSION).tolist()},
            "metadata": {"position": i},
        }
        for i in range(count)
    ]


def create_indexes(service: S3VectorsService) -> None:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    metadata_configuration = {"nonFilterableMetadataKeys": ["text"]}
    definition = {"dataType": "float32", "dimension": DIMENSION}
    call(
        service,
        "CreateIndex",
        {
            **INDEX,
            **definition,
            "distanceMetric": "cosine",
            "metadataConfiguration": metadata_configuration,
        },
    )
    call(service, "CreateIndex", {**EUCLIDEAN_INDEX, **definition, "distanceMetric": "euclidean"})


@pytest.fixture
def service() -> Iterator[S3VectorsService]:
    service = S3VectorsService(None, enforce_write_limits=False)
    create_indexes(service)
    yield service
    service.close()


def all_keys(service: S3VectorsService, **options: Any) -> list[str]:
    keys: list[str] = []
    body: dict[str, Any] = {**INDEX, **options}
    while True:
        page = call(service, "ListVectors", body)
        keys += [v["key"] for v in page["vectors"]]
        if "nextToken" not in page:
            return keys
        body = {**body, "nextToken": page["nextToken"]}


def test_put_then_get(service: S3VectorsService) -> None:
    vectors = [vector("doc-1#page=1", genre="news", year=2024), vector("doc-1#page=2")]
    assert call(service, "PutVectors", {**INDEX, "vectors": vectors}) == {}

    keys_only = call(service, "GetVectors", {**INDEX, "keys": ["doc-1#page=1"]})
    assert keys_only == {"vectors": [{"key": "doc-1#page=1"}]}

    body = {**INDEX, "keys": ["doc-1#page=2", "absent", "doc-1#page=1", "doc-1#page=2"]}
    full = call(service, "GetVectors", {**body, "returnData": True, "returnMetadata": True})
    assert full == {
        "vectors": [
            {"key": "doc-1#page=2", "data": {"float32": [1.0, 0.5, 0.25, 0.125]}, "metadata": {}},
            {
                "key": "doc-1#page=1",
                "data": {"float32": [1.0, 0.5, 0.25, 0.125]},
                "metadata": {"genre": "news", "year": 2024},
            },
        ]
    }


def test_values_are_stored_as_float32(service: S3VectorsService) -> None:
    values = [0.1, 1 / 3, 1e-3, 123456.789]
    call(service, "PutVectors", {**INDEX, "vectors": [vector("k", values)]})
    got = call(service, "GetVectors", {**INDEX, "keys": ["k"], "returnData": True})
    stored = got["vectors"][0]["data"]["float32"]
    assert stored == np.asarray(values, dtype=np.float32).tolist()
    assert stored != values


def test_put_overwrites_the_whole_vector(service: S3VectorsService) -> None:
    call(service, "PutVectors", {**INDEX, "vectors": [vector("k", genre="news", year=1)]})
    replacement = vector("k", [0.0, 0.0, 0.0, 2.0], genre="sport")
    call(service, "PutVectors", {**INDEX, "vectors": [replacement]})
    body = {**INDEX, "keys": ["k"], "returnData": True, "returnMetadata": True}
    assert call(service, "GetVectors", body)["vectors"] == [
        {"key": "k", "data": {"float32": [0.0, 0.0, 0.0, 2.0]}, "metadata": {"genre": "sport"}}
    ]
    assert all_keys(service) == ["k"]


def test_zero_vectors_are_allowed_on_euclidean_indexes(service: S3VectorsService) -> None:
    call(service, "PutVectors", {**EUCLIDEAN_INDEX, "vectors": [vector("zero", [0.0] * 4)]})
    body = {**INDEX, "vectors": [vector("zero", [0.0] * 4)]}
    expect_error(service, "PutVectors", body, "ValidationException", 400, "all zeros")


def sized_metadata(key: str, size: int, char: str = "x") -> dict[str, str]:
    """A one-key metadata object whose compact UTF-8 JSON encoding is ``size`` bytes."""
    overhead = len(json.dumps({key: ""}, separators=(",", ":")))
    return {key: char * ((size - overhead) // len(char.encode()))}


def test_metadata_size_limits_are_inclusive(service: S3VectorsService) -> None:
    filterable = sized_metadata("f", 2048)
    non_filterable_total = sized_metadata("text", 40960)
    utf8 = sized_metadata("f", 2048, "é")
    assert len(utf8["f"]) == 1020
    vectors = [
        vector("filterable", **filterable),
        vector("total", **non_filterable_total),
        vector("utf8", **utf8),
        vector("many-keys", **{f"key{i}": i for i in range(50)}),
        vector("long-key-name", **{"k" * 63: [1, "two", True]}),
    ]
    call(service, "PutVectors", {**INDEX, "vectors": vectors})
    assert len(all_keys(service)) == 5


BAD_RECORDS = [
    ({"key": "", "data": {"float32": [1, 2, 3, 4]}}, "Invalid key at vectors[0]"),
    ({"key": "k" * 1025, "data": {"float32": [1, 2, 3, 4]}}, "1-1024 characters"),
    ({"key": 7, "data": {"float32": [1, 2, 3, 4]}}, "Invalid key at vectors[0]"),
    ({"data": {"float32": [1, 2, 3, 4]}}, "Invalid key at vectors[0]"),
    ({"key": "k"}, "Invalid record for key 'k': data is required"),
    ({"key": "k", "data": [1, 2, 3, 4]}, "data must be an object with the single member float32"),
    ({"key": "k", "data": {"float64": [1, 2, 3, 4]}}, "single member float32"),
    ({"key": "k", "data": {"float32": "1,2,3,4"}}, "float32 must be an array of numbers"),
    ({"key": "k", "data": {"float32": [1, 2, "3", 4]}}, "float32 must be an array of numbers"),
    ({"key": "k", "data": {"float32": [1, 2, True, 4]}}, "float32 must be an array of numbers"),
    ({"key": "k", "data": {"float32": [1, 2, 3]}}, "vector must have length 4, but has length 3"),
    ({"key": "k", "data": {"float32": [1, 2, float("nan"), 4]}}, "NaN or Infinity"),
    ({"key": "k", "data": {"float32": [1, 2, float("inf"), 4]}}, "NaN or Infinity"),
    ({"key": "k", "data": {"float32": [1, 2, float("-inf"), 4]}}, "NaN or Infinity"),
    ({"key": "k", "data": {"float32": [1, 2, 1e39, 4]}}, "within the float32 range"),
    ({"key": "k", "data": {"float32": [0, 0, 0, 0]}}, "must not be all zeros"),
    ({"key": "k", "data": {"float32": [1e-50, 0, 0, 0]}}, "must not be all zeros"),
    ({**vector("k"), "metadata": ["a"]}, "metadata must be a JSON object"),
    (vector("k", genre=None), "metadata value of 'genre' must be a string, number, boolean"),
    (vector("k", nested={"a": 1}), "metadata value of 'nested'"),
    (vector("k", nested=[[1]]), "metadata value of 'nested'"),
    (vector("k", nested=[{"a": 1}]), "metadata value of 'nested'"),
    (vector("k", score=float("nan")), "metadata value of 'score'"),
    (vector("k", **{f"key{i}": i for i in range(51)}), "metadata has 51 keys; at most 50"),
    (vector("k", **{"k" * 64: 1}), "must be 1-63 chars"),
    (vector("k", **{"": 1}), "must be 1-63 chars"),
    (vector("k", **sized_metadata("f", 2049)), "filterable metadata is 2049 bytes; at most 2048"),
    (vector("k", **sized_metadata("f", 2050, "é")), "filterable metadata is 2050 bytes"),
    (vector("k", **sized_metadata("text", 40961)), "metadata is 40961 bytes; at most 40960"),
    ("not-an-object", "Invalid record at vectors[0]: not a JSON object"),
]


@pytest.mark.parametrize(("record", "fragment"), BAD_RECORDS)
def test_put_vectors_rules(service: S3VectorsService, record: Any, fragment: str) -> None:
    body = {**INDEX, "vectors": [record]}
    error = expect_error(service, "PutVectors", body, "ValidationException", 400, fragment)
    assert error.body()["fieldList"][0]["path"] == "vectors"


def test_wrong_length_message_names_the_key_and_the_rule(service: S3VectorsService) -> None:
    body = {**INDEX, "vectors": [vector("doc-1#page=3", [1.0, 2.0, 3.0])]}
    error = expect_error(service, "PutVectors", body, "ValidationException", 400, "")
    assert error.message == (
        "Invalid record for key 'doc-1#page=3': vector must have length 4, but has length 3"
    )


def test_one_bad_vector_fails_the_whole_batch(service: S3VectorsService) -> None:
    batch = [*random_vectors(10), vector("bad", [1.0, 2.0])]
    expect_error(
        service, "PutVectors", {**INDEX, "vectors": batch}, "ValidationException", 400, "bad"
    )
    assert all_keys(service) == []


@pytest.mark.parametrize(
    ("vectors", "fragment"),
    [
        ([], "vectors must have between 1 and 500 items, got 0"),
        (random_vectors(501), "vectors must have between 1 and 500 items, got 501"),
        ([vector("same"), vector("other"), vector("same")], "Duplicate key 'same'"),
        (None, "vectors is required"),
        ({"key": "k"}, "vectors must be a JSON array"),
    ],
)
def test_put_vectors_batch_rules(service: S3VectorsService, vectors: Any, fragment: str) -> None:
    body = {**INDEX} if vectors is None else {**INDEX, "vectors": vectors}
    expect_error(service, "PutVectors", body, "ValidationException", 400, fragment)


def test_batch_of_500_is_accepted(service: S3VectorsService) -> None:
    call(service, "PutVectors", {**INDEX, "vectors": random_vectors(500)})
    assert len(all_keys(service)) == 500


@pytest.mark.parametrize(
    ("operation", "body", "fragment"),
    [
        ("GetVectors", {"keys": []}, "keys must have between 1 and 100 items"),
        ("GetVectors", {"keys": [f"k{i}" for i in range(101)]}, "between 1 and 100 items"),
        ("GetVectors", {"keys": ["k" * 1025]}, "Invalid key at keys[0]"),
        ("GetVectors", {"keys": ["k"], "returnData": "yes"}, "returnData must be a JSON boolean"),
        ("GetVectors", {}, "keys is required"),
        ("DeleteVectors", {"keys": []}, "keys must have between 1 and 500 items"),
        ("DeleteVectors", {"keys": [f"k{i}" for i in range(501)]}, "between 1 and 500 items"),
        ("DeleteVectors", {"keys": [""]}, "Invalid key at keys[0]"),
    ],
)
def test_get_and_delete_rules(
    service: S3VectorsService, operation: str, body: dict[str, Any], fragment: str
) -> None:
    expect_error(service, operation, {**INDEX, **body}, "ValidationException", 400, fragment)


def test_limits_of_get_and_delete_are_inclusive(service: S3VectorsService) -> None:
    call(service, "PutVectors", {**INDEX, "vectors": random_vectors(100)})
    keys = [f"doc-{i}" for i in range(100)]
    assert len(call(service, "GetVectors", {**INDEX, "keys": keys})["vectors"]) == 100
    absent = [f"absent-{i}" for i in range(400)]
    assert call(service, "DeleteVectors", {**INDEX, "keys": keys + absent}) == {}
    assert all_keys(service) == []


def test_delete_vectors_ignores_absent_keys(service: S3VectorsService) -> None:
    call(service, "PutVectors", {**INDEX, "vectors": random_vectors(5)})
    assert call(service, "DeleteVectors", {**INDEX, "keys": ["doc-1", "doc-3", "never"]}) == {}
    assert sorted(all_keys(service)) == ["doc-0", "doc-2", "doc-4"]
    got = call(service, "GetVectors", {**INDEX, "keys": ["doc-1", "doc-2"]})
    assert got == {"vectors": [{"key": "doc-2"}]}


@pytest.mark.parametrize("operation", ["PutVectors", "GetVectors", "ListVectors", "DeleteVectors"])
def test_vector_operations_on_a_missing_index(service: S3VectorsService, operation: str) -> None:
    body = {
        "vectorBucketName": "media",
        "indexName": "absent",
        "keys": ["k"],
        "vectors": [vector("k")],
    }
    expect_error(
        service, operation, body, "NotFoundException", 404, "Index 'absent' does not exist"
    )
    body = {**body, "vectorBucketName": "nobucket"}
    expect_error(service, operation, body, "NotFoundException", 404, "'nobucket' does not exist")


def test_list_vectors_pages_through_every_vector_once(service: S3VectorsService) -> None:
    call(service, "PutVectors", {**INDEX, "vectors": random_vectors(50)})
    first = call(service, "ListVectors", {**INDEX, "maxResults": 7})
    assert len(first["vectors"]) == 7
    assert first["vectors"][0] == {"key": "doc-0"}
    keys = all_keys(service, maxResults=7)
    assert keys == [f"doc-{i}" for i in range(50)]
    assert "nextToken" not in call(service, "ListVectors", {**INDEX, "maxResults": 50})


def test_list_vectors_default_page_is_500(service: S3VectorsService) -> None:
    for start in range(0, 1200, 500):
        batch = random_vectors(500, seed=start, prefix=f"b{start}")
        call(service, "PutVectors", {**INDEX, "vectors": batch})
    page = call(service, "ListVectors", INDEX)
    assert len(page["vectors"]) == 500
    page = call(service, "ListVectors", {**INDEX, "maxResults": 1000})
    assert len(page["vectors"]) == 1000
    assert len(all_keys(service, maxResults=1000)) == 1500


def test_list_vectors_returns_data_and_metadata_when_asked(service: S3VectorsService) -> None:
    call(service, "PutVectors", {**INDEX, "vectors": [vector("k", genre="news")]})
    body = {**INDEX, "returnData": True, "returnMetadata": True}
    assert call(service, "ListVectors", body)["vectors"] == [
        {"key": "k", "data": {"float32": [1.0, 0.5, 0.25, 0.125]}, "metadata": {"genre": "news"}}
    ]


@pytest.mark.parametrize("segment_count", [1, 3, 16])
def test_list_vectors_segments_partition_the_keys(
    service: S3VectorsService, segment_count: int
) -> None:
    call(service, "PutVectors", {**INDEX, "vectors": random_vectors(200)})
    listed: list[str] = []
    for segment_index in range(segment_count):
        segment = all_keys(
            service, segmentCount=segment_count, segmentIndex=segment_index, maxResults=9
        )
        if segment_count > 1:
            assert 0 < len(segment) < 200
        listed += segment
    assert sorted(listed) == sorted(f"doc-{i}" for i in range(200))
    assert len(listed) == len(set(listed)) == 200


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"maxResults": 0}, "maxResults must be between 1 and 1000"),
        ({"maxResults": 1001}, "maxResults must be between 1 and 1000"),
        ({"segmentCount": 2}, "segmentCount and segmentIndex must be given together"),
        ({"segmentIndex": 0}, "segmentCount and segmentIndex must be given together"),
        ({"segmentCount": 17, "segmentIndex": 0}, "segmentCount must be between 1 and 16"),
        ({"segmentCount": 0, "segmentIndex": 0}, "segmentCount must be between 1 and 16"),
        ({"segmentCount": 16, "segmentIndex": 16}, "segmentIndex must be between 0 and 15"),
        ({"segmentCount": 4, "segmentIndex": 4}, "must be less than segmentCount"),
        ({"nextToken": "garbage"}, "nextToken is not a token"),
    ],
)
def test_list_vectors_rules(
    service: S3VectorsService, options: dict[str, Any], fragment: str
) -> None:
    expect_error(service, "ListVectors", {**INDEX, **options}, "ValidationException", 400, fragment)


def test_a_segment_token_does_not_continue_another_segment(service: S3VectorsService) -> None:
    call(service, "PutVectors", {**INDEX, "vectors": random_vectors(40)})
    page = call(
        service, "ListVectors", {**INDEX, "segmentCount": 2, "segmentIndex": 0, "maxResults": 2}
    )
    body = {**INDEX, "segmentCount": 2, "segmentIndex": 1, "nextToken": page["nextToken"]}
    expect_error(
        service, "ListVectors", body, "ValidationException", 400, "another index or segment"
    )
    body = {**EUCLIDEAN_INDEX, "segmentCount": 2, "segmentIndex": 0, "nextToken": page["nextToken"]}
    expect_error(
        service, "ListVectors", body, "ValidationException", 400, "another index or segment"
    )


def test_everything_survives_a_restart(tmp_path: Path) -> None:
    first = S3VectorsService(tmp_path / "state", enforce_write_limits=False)
    create_indexes(first)
    vectors = random_vectors(30)
    call(first, "PutVectors", {**INDEX, "vectors": vectors})
    call(first, "DeleteVectors", {**INDEX, "keys": ["doc-0", "doc-7"]})
    call(first, "PutVectors", {**INDEX, "vectors": [vector("doc-3", genre="replaced")]})
    policy = json.dumps({"Version": "2012-10-17"})
    call(first, "PutVectorBucketPolicy", {"vectorBucketName": "media", "policy": policy})
    index_arn = call(first, "GetIndex", INDEX)["index"]["indexArn"]
    first.handle("TagResource", {"tags": {"team": "search"}}, {"resourceArn": index_arn}, {})
    query = {**INDEX, "topK": 5, "queryVector": vectors[4]["data"], "returnDistance": True}
    answer_before = call(first, "QueryVectors", query)
    index_before = call(first, "GetIndex", INDEX)
    keys_before = all_keys(first)
    first.close()

    second = S3VectorsService(tmp_path / "state", enforce_write_limits=False)
    assert (tmp_path / "state" / "s3vectors.sqlite3").exists()
    assert call(second, "GetIndex", INDEX) == index_before
    assert [
        b["vectorBucketName"] for b in call(second, "ListVectorBuckets", {})["vectorBuckets"]
    ] == ["media"]
    assert all_keys(second) == keys_before
    assert len(keys_before) == 28
    body = {**INDEX, "keys": ["doc-3", "doc-5"], "returnData": True, "returnMetadata": True}
    got = call(second, "GetVectors", body)["vectors"]
    assert got[0] == {
        "key": "doc-3",
        "data": {"float32": [1.0, 0.5, 0.25, 0.125]},
        "metadata": {"genre": "replaced"},
    }
    expected_data = np.asarray(vectors[5]["data"]["float32"], dtype=np.float32).tolist()
    assert got[1] == {
        "key": "doc-5",
        "data": {"float32": expected_data},
        "metadata": {"position": 5},
    }
    assert call(second, "QueryVectors", query) == answer_before
    assert call(second, "GetVectorBucketPolicy", {"vectorBucketName": "media"}) == {
        "policy": policy
    }
    assert second.handle("ListTagsForResource", {}, {"resourceArn": index_arn}, {}) == {
        "tags": {"team": "search"}
    }
    call(second, "PutVectors", {**INDEX, "vectors": [vector("after-restart")]})
    assert all_keys(second)[-1] == "after-restart"
    second.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[S3VectorsService]:
    service = S3VectorsService(None, clock=clock)
    create_indexes(service)
    yield service
    service.close()


def test_vector_rate_limit_refuses_whole_batches(
    limited: S3VectorsService, clock: FakeClock
) -> None:
    for batch in range(5):
        vectors = random_vectors(500, seed=batch, prefix=f"b{batch}")
        call(limited, "PutVectors", {**INDEX, "vectors": vectors})
    body = {**INDEX, "vectors": random_vectors(1, prefix="late")}
    expect_error(
        limited, "PutVectors", body, "TooManyRequestsException", 429, "2500 vectors per second"
    )
    expect_error(
        limited,
        "DeleteVectors",
        {**INDEX, "keys": ["b0-0"]},
        "TooManyRequestsException",
        429,
        "pages",
    )

    clock.now += 0.2  # refills 500 vectors
    call(limited, "PutVectors", {**INDEX, "vectors": random_vectors(400, prefix="refill")})
    too_big = {**INDEX, "vectors": random_vectors(101, prefix="too-big")}
    expect_error(
        limited, "PutVectors", too_big, "TooManyRequestsException", 429, "Write rate exceeded"
    )
    assert call(limited, "GetVectors", {**INDEX, "keys": ["too-big-0", "too-big-100"]}) == {
        "vectors": []
    }
    call(limited, "PutVectors", {**INDEX, "vectors": random_vectors(100, prefix="fits")})

    # The limit is per index: another index has its own budget.
    call(limited, "PutVectors", {**EUCLIDEAN_INDEX, "vectors": random_vectors(500)})
    clock.now += 10  # a bucket holds at most one second's worth
    for batch in range(5):
        call(
            limited,
            "PutVectors",
            {**INDEX, "vectors": random_vectors(500, seed=batch, prefix=f"b{batch}")},
        )
    expect_error(limited, "PutVectors", body, "TooManyRequestsException", 429, "per second")


def test_request_rate_limit(limited: S3VectorsService, clock: FakeClock) -> None:
    for _ in range(1000):
        call(limited, "DeleteVectors", {**INDEX, "keys": ["absent"]})
    body = {**INDEX, "keys": ["absent"]}
    error = expect_error(limited, "DeleteVectors", body, "TooManyRequestsException", 429, "1000")
    assert "PutVectors/DeleteVectors requests" in error.message
    clock.now += 0.001  # one request's worth
    call(limited, "DeleteVectors", body)
    expect_error(limited, "DeleteVectors", body, "TooManyRequestsException", 429, "1000")


def test_rejected_requests_do_not_use_the_budget(limited: S3VectorsService) -> None:
    bad = {**INDEX, "vectors": [vector("bad", [1.0])] * 1}
    for _ in range(1200):
        with pytest.raises(ServiceError):
            call(limited, "PutVectors", bad)
    call(limited, "PutVectors", {**INDEX, "vectors": random_vectors(500)})


def test_write_limits_can_be_disabled(service: S3VectorsService) -> None:
    for batch in range(7):
        vectors = random_vectors(500, seed=batch, prefix=f"b{batch}")
        call(service, "PutVectors", {**INDEX, "vectors": vectors})
    assert len(all_keys(service, maxResults=1000)) == 3500


def test_concurrent_writers_and_readers(service: S3VectorsService) -> None:
    def write_and_read(worker: int) -> int:
        for batch in range(10):
            vectors = random_vectors(20, seed=worker * 100 + batch, prefix=f"w{worker}-{batch}")
            call(service, "PutVectors", {**INDEX, "vectors": vectors})
            query = {**INDEX, "topK": 5, "queryVector": vectors[0]["data"]}
            assert call(service, "QueryVectors", query)["vectors"][0] == {"key": vectors[0]["key"]}
        return worker

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert sorted(pool.map(write_and_read, range(8))) == list(range(8))
    keys = all_keys(service, maxResults=1000)
    assert len(keys) == len(set(keys)) == 8 * 10 * 20
