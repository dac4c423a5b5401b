"""S3 Vectors stand-in: buckets, indexes, policies, tags and index modes, called through
``S3VectorsService.handle`` as the HTTP layer calls it."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from emulator.errors import ServiceError
from emulator.s3vectors import ROUTES, S3VectorsService
from emulator.s3vectors import service as service_module

REGION, ACCOUNT = "us-east-1", "123456789012"
BUCKET_ARN = f"arn:aws:s3vectors:{REGION}:{ACCOUNT}:bucket/media"
INDEX_ARN = f"{BUCKET_ARN}/index/pages.v1"
INDEX = {"vectorBucketName": "media", "indexName": "pages.v1"}
INDEX_DEFINITION = {"dataType": "float32", "dimension": 8, "distanceMetric": "cosine"}


def call(
    service: S3VectorsService,
    operation: str,
    body: Mapping[str, Any] | None = None,
    *,
    arn: str | None = None,
    query: Mapping[str, list[str]] | None = None,
) -> dict[str, Any]:
    path_params = {} if arn is None else {"resourceArn": arn}
    return service.handle(operation, body or {}, path_params, query or {})


def expect_error(
    service: S3VectorsService,
    operation: str,
    body: Mapping[str, Any] | None,
    code: str,
    status: int,
    fragment: str,
    **options: Any,
) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        call(service, operation, body, **options)
    error = caught.value
    assert (error.code, error.status) == (code, status)
    assert fragment in error.message
    return error


@pytest.fixture
def service() -> Iterator[S3VectorsService]:
    service = S3VectorsService(None, region=REGION, account_id=ACCOUNT)
    yield service
    service.close()


@pytest.fixture
def with_index(service: S3VectorsService) -> S3VectorsService:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    call(service, "CreateIndex", {**INDEX, **INDEX_DEFINITION})
    return service


def test_routes_cover_every_operation_of_the_model() -> None:
    operations = {route.operation for route in ROUTES}
    assert len(operations) == len(ROUTES) == 22
    assert {"UpdateIndexMode", "UpdateMetadataConfiguration"} <= operations
    assert {"PutVectorBucketDefaultIndexMode", "QueryVectors"} <= operations
    tags_routes = {(r.method, r.operation) for r in ROUTES if r.path == "/tags/{resourceArn}"}
    assert tags_routes == {
        ("GET", "ListTagsForResource"),
        ("POST", "TagResource"),
        ("DELETE", "UntagResource"),
    }
    assert all(r.path == f"/{r.operation}" for r in ROUTES if "tags" not in r.path)


def test_unknown_operation_is_a_validation_error(service: S3VectorsService) -> None:
    expect_error(service, "DescribeEverything", {}, "ValidationException", 400, "Unknown")


def test_bucket_lifecycle(service: S3VectorsService) -> None:
    created = call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    assert created == {"vectorBucketArn": BUCKET_ARN}

    bucket = call(service, "GetVectorBucket", {"vectorBucketArn": BUCKET_ARN})["vectorBucket"]
    assert bucket["vectorBucketName"] == "media"
    assert bucket["vectorBucketArn"] == BUCKET_ARN
    assert isinstance(bucket["creationTime"], float)
    assert bucket["encryptionConfiguration"] == {"sseType": "AES256"}
    assert bucket["defaultIndexMode"] == "ENHANCED"

    listed = call(service, "ListVectorBuckets")["vectorBuckets"]
    assert [b["vectorBucketName"] for b in listed] == ["media"]
    assert set(listed[0]) == {"vectorBucketName", "vectorBucketArn", "creationTime"}

    assert call(service, "DeleteVectorBucket", {"vectorBucketName": "media"}) == {}
    expect_error(
        service, "GetVectorBucket", {"vectorBucketName": "media"}, "NotFoundException", 404, "media"
    )


def test_bucket_with_kms_encryption_and_tags(service: S3VectorsService) -> None:
    key_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    call(
        service,
        "CreateVectorBucket",
        {
            "vectorBucketName": "media",
            "encryptionConfiguration": {"sseType": "aws:kms", "kmsKeyArn": key_arn},
            "tags": {"team": "search"},
        },
    )
    bucket = call(service, "GetVectorBucket", {"vectorBucketName": "media"})["vectorBucket"]
    assert bucket["encryptionConfiguration"] == {"sseType": "aws:kms", "kmsKeyArn": key_arn}
    assert call(service, "ListTagsForResource", arn=BUCKET_ARN) == {"tags": {"team": "search"}}


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("ab", "Invalid vector bucket name 'ab'"),
        ("a" * 64, "Invalid vector bucket name"),
        ("Media", "lowercase"),
        ("my.bucket", "hyphens"),
        ("-media", "starting and ending"),
        ("media-", "starting and ending"),
        ("me_dia", "Invalid vector bucket name"),
    ],
)
def test_bucket_naming_rules(service: S3VectorsService, name: str, fragment: str) -> None:
    body = {"vectorBucketName": name}
    expect_error(service, "CreateVectorBucket", body, "ValidationException", 400, fragment)


def test_bucket_name_limits_are_inclusive(service: S3VectorsService) -> None:
    for name in ("a1b", "a" * 63, "0-9"):
        call(service, "CreateVectorBucket", {"vectorBucketName": name})


@pytest.mark.parametrize(
    ("encryption", "fragment"),
    [
        ({"sseType": "aws:kms"}, "kmsKeyArn is required"),
        ({"sseType": "AES256", "kmsKeyArn": "arn:aws:kms:x"}, "allowed only when sseType"),
        ({"sseType": "aws:kms", "kmsKeyArn": "not-an-arn"}, "is not a KMS key ARN"),
        ({"sseType": "SSE-C"}, "sseType must be one of AES256, aws:kms"),
    ],
)
def test_encryption_configuration_rules(
    service: S3VectorsService, encryption: dict[str, str], fragment: str
) -> None:
    body = {"vectorBucketName": "media", "encryptionConfiguration": encryption}
    expect_error(service, "CreateVectorBucket", body, "ValidationException", 400, fragment)


def test_creating_a_bucket_twice_conflicts(service: S3VectorsService) -> None:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    body = {"vectorBucketName": "media"}
    expect_error(service, "CreateVectorBucket", body, "ConflictException", 409, "already exists")


def test_bucket_quota(service: S3VectorsService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "MAX_BUCKETS", 2)
    call(service, "CreateVectorBucket", {"vectorBucketName": "one"})
    call(service, "CreateVectorBucket", {"vectorBucketName": "two"})
    body = {"vectorBucketName": "three"}
    expect_error(
        service, "CreateVectorBucket", body, "ServiceQuotaExceededException", 402, "At most 2"
    )


@pytest.mark.parametrize(
    ("body", "code", "status", "fragment"),
    [
        ({}, "ValidationException", 400, "Specify either vectorBucketName or vectorBucketArn"),
        (
            {"vectorBucketName": "media", "vectorBucketArn": BUCKET_ARN},
            "ValidationException",
            400,
            "not both",
        ),
        ({"vectorBucketArn": "arn:aws:s3:::media"}, "ValidationException", 400, "Invalid ARN"),
        ({"vectorBucketArn": INDEX_ARN}, "ValidationException", 400, "names an index"),
        (
            {"vectorBucketArn": BUCKET_ARN.replace(REGION, "eu-west-1")},
            "NotFoundException",
            404,
            "eu-west-1",
        ),
        ({"vectorBucketName": "absent"}, "NotFoundException", 404, "'absent' does not exist"),
    ],
)
def test_bucket_addressing(
    service: S3VectorsService, body: dict[str, Any], code: str, status: int, fragment: str
) -> None:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    expect_error(service, "GetVectorBucket", body, code, status, fragment)


def test_list_vector_buckets_pages_and_prefix(service: S3VectorsService) -> None:
    names = [f"team-{n:02d}" for n in range(7)] + ["other"]
    for name in names:
        call(service, "CreateVectorBucket", {"vectorBucketName": name})
    seen: list[str] = []
    body: dict[str, Any] = {"maxResults": 3, "prefix": "team-"}
    while True:
        page = call(service, "ListVectorBuckets", body)
        assert len(page["vectorBuckets"]) <= 3
        seen += [b["vectorBucketName"] for b in page["vectorBuckets"]]
        if "nextToken" not in page:
            break
        body = {**body, "nextToken": page["nextToken"]}
    assert seen == sorted(n for n in names if n.startswith("team-"))
    assert call(service, "ListVectorBuckets", {"prefix": "zzz"}) == {"vectorBuckets": []}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"maxResults": 0}, "maxResults must be between 1 and 500"),
        ({"maxResults": 501}, "maxResults must be between 1 and 500"),
        ({"maxResults": "5"}, "maxResults must be a JSON number"),
        ({"prefix": "p" * 64}, "prefix must have a length between 1 and 63"),
        ({"nextToken": "not-a-token"}, "nextToken is not a token"),
    ],
)
def test_list_vector_buckets_rules(
    service: S3VectorsService, body: dict[str, Any], fragment: str
) -> None:
    expect_error(service, "ListVectorBuckets", body, "ValidationException", 400, fragment)


def test_a_list_indexes_token_does_not_continue_a_bucket_listing(
    with_index: S3VectorsService,
) -> None:
    call(with_index, "CreateIndex", {**INDEX, "indexName": "pages.v2", **INDEX_DEFINITION})
    page = call(with_index, "ListIndexes", {"vectorBucketName": "media", "maxResults": 1})
    body = {"nextToken": page["nextToken"]}
    expect_error(with_index, "ListVectorBuckets", body, "ValidationException", 400, "nextToken")


def test_deleting_a_bucket_with_indexes_conflicts(with_index: S3VectorsService) -> None:
    body = {"vectorBucketName": "media"}
    expect_error(with_index, "DeleteVectorBucket", body, "ConflictException", 409, "not empty")
    call(with_index, "DeleteIndex", {"indexArn": INDEX_ARN})
    assert call(with_index, "DeleteVectorBucket", body) == {}


def test_bucket_policy_lifecycle(service: S3VectorsService) -> None:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    bucket = {"vectorBucketName": "media"}
    expect_error(service, "GetVectorBucketPolicy", bucket, "NotFoundException", 404, "no bucket")
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    assert call(service, "PutVectorBucketPolicy", {**bucket, "policy": policy}) == {}
    assert call(service, "GetVectorBucketPolicy", {"vectorBucketArn": BUCKET_ARN}) == {
        "policy": policy
    }
    assert call(service, "DeleteVectorBucketPolicy", bucket) == {}
    assert call(service, "DeleteVectorBucketPolicy", bucket) == {}
    expect_error(service, "GetVectorBucketPolicy", bucket, "NotFoundException", 404, "no bucket")


@pytest.mark.parametrize(
    ("policy", "fragment"),
    [("{not json", "policy is not valid JSON"), ("[1, 2]", "policy must be a JSON object")],
)
def test_bucket_policy_must_be_a_json_object(
    service: S3VectorsService, policy: str, fragment: str
) -> None:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    body = {"vectorBucketName": "media", "policy": policy}
    expect_error(service, "PutVectorBucketPolicy", body, "ValidationException", 400, fragment)


def test_policy_of_a_missing_bucket(service: S3VectorsService) -> None:
    body = {"vectorBucketName": "absent", "policy": "{}"}
    expect_error(service, "PutVectorBucketPolicy", body, "NotFoundException", 404, "absent")


def test_index_lifecycle(service: S3VectorsService) -> None:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    created = call(
        service,
        "CreateIndex",
        {
            "vectorBucketArn": BUCKET_ARN,
            "indexName": "pages.v1",
            **INDEX_DEFINITION,
            "metadataConfiguration": {"nonFilterableMetadataKeys": ["text", "source"]},
            "tags": {"stage": "dev"},
        },
    )
    assert created == {"indexArn": INDEX_ARN}

    index = call(service, "GetIndex", {"indexArn": INDEX_ARN})["index"]
    assert index == {
        "vectorBucketName": "media",
        "indexName": "pages.v1",
        "indexArn": INDEX_ARN,
        "creationTime": index["creationTime"],
        "dataType": "float32",
        "dimension": 8,
        "distanceMetric": "cosine",
        "metadataConfiguration": {"nonFilterableMetadataKeys": ["text", "source"]},
        "encryptionConfiguration": {"sseType": "AES256"},
        "indexMode": "ENHANCED",
    }
    assert isinstance(index["creationTime"], float)
    assert call(service, "ListTagsForResource", arn=INDEX_ARN) == {"tags": {"stage": "dev"}}

    listed = call(service, "ListIndexes", {"vectorBucketName": "media"})["indexes"]
    assert [i["indexName"] for i in listed] == ["pages.v1"]
    assert set(listed[0]) == {"vectorBucketName", "indexName", "indexArn", "creationTime"}

    assert call(service, "DeleteIndex", INDEX) == {}
    expect_error(service, "GetIndex", INDEX, "NotFoundException", 404, "'pages.v1' does not exist")
    assert call(service, "ListIndexes", {"vectorBucketName": "media"}) == {"indexes": []}


def test_index_inherits_the_bucket_encryption(service: S3VectorsService) -> None:
    key_arn = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/abc"
    encryption = {"sseType": "aws:kms", "kmsKeyArn": key_arn}
    body = {"vectorBucketName": "media", "encryptionConfiguration": encryption}
    call(service, "CreateVectorBucket", body)
    call(service, "CreateIndex", {**INDEX, **INDEX_DEFINITION})
    assert call(service, "GetIndex", INDEX)["index"]["encryptionConfiguration"] == encryption
    own = {**INDEX, "indexName": "own", **INDEX_DEFINITION}
    call(service, "CreateIndex", {**own, "encryptionConfiguration": {"sseType": "AES256"}})
    got = call(service, "GetIndex", {**INDEX, "indexName": "own"})["index"]
    assert got["encryptionConfiguration"] == {"sseType": "AES256"}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"indexName": "Pages"}, "Invalid index name 'Pages'"),
        ({"indexName": "ab"}, "Invalid index name"),
        ({"indexName": ".pages"}, "starting and ending"),
        ({"dataType": "float16"}, "dataType must be one of float32"),
        ({"dimension": 0}, "dimension must be between 1 and 4096"),
        ({"dimension": 4097}, "dimension must be between 1 and 4096"),
        ({"dimension": 1.5}, "dimension must be an integer"),
        ({"distanceMetric": "Cosine"}, "distanceMetric must be one of cosine, euclidean"),
        ({"distanceMetric": "dotproduct"}, "distanceMetric must be one of"),
        ({"dimension": None}, "dimension is required"),
        ({"metadataConfiguration": {"nonFilterableMetadataKeys": []}}, "array of 1-10 keys"),
        (
            {"metadataConfiguration": {"nonFilterableMetadataKeys": [f"k{i}" for i in range(11)]}},
            "array of 1-10 keys",
        ),
        ({"metadataConfiguration": {"nonFilterableMetadataKeys": ["k" * 64]}}, "1-63 characters"),
        ({"metadataConfiguration": {"nonFilterableMetadataKeys": ["a", "a"]}}, "a key twice"),
        (
            {
                "metadataConfiguration": {
                    "textSearchConfigurations": [{"metadataKey": "text", "language": "xx"}]
                }
            },
            "textSearchConfigurations[0].language must be one of",
        ),
    ],
)
def test_create_index_rules(
    service: S3VectorsService, change: dict[str, Any], fragment: str
) -> None:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    body = {k: v for k, v in {**INDEX, **INDEX_DEFINITION, **change}.items() if v is not None}
    expect_error(service, "CreateIndex", body, "ValidationException", 400, fragment)


def test_index_limits_are_inclusive(service: S3VectorsService) -> None:
    call(service, "CreateVectorBucket", {"vectorBucketName": "media"})
    for name, dimension in (("one", 1), ("max", 4096), ("a" * 63, 3), ("a.b", 3)):
        body = {**INDEX, **INDEX_DEFINITION, "indexName": name, "dimension": dimension}
        call(service, "CreateIndex", body)


def test_creating_an_index_twice_conflicts(with_index: S3VectorsService) -> None:
    body = {**INDEX, **INDEX_DEFINITION}
    expect_error(with_index, "CreateIndex", body, "ConflictException", 409, "already exists")


def test_index_in_a_missing_bucket(service: S3VectorsService) -> None:
    body = {**INDEX, **INDEX_DEFINITION}
    expect_error(service, "CreateIndex", body, "NotFoundException", 404, "'media' does not exist")


def test_index_quota(with_index: S3VectorsService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "MAX_INDEXES_PER_BUCKET", 1)
    body = {**INDEX, "indexName": "second", **INDEX_DEFINITION}
    expect_error(
        with_index, "CreateIndex", body, "ServiceQuotaExceededException", 402, "indexes per"
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"vectorBucketName": "media"}, "Specify either indexArn or both"),
        ({"indexName": "pages.v1"}, "Specify either indexArn or both"),
        ({"indexArn": INDEX_ARN, "indexName": "pages.v1"}, "not both"),
        ({"indexArn": BUCKET_ARN}, "names a bucket, not an index"),
        ({"indexArn": f"{BUCKET_ARN}/index/Bad_Name"}, "Invalid index name"),
    ],
)
def test_index_addressing_rules(
    with_index: S3VectorsService, body: dict[str, Any], fragment: str
) -> None:
    expect_error(with_index, "GetIndex", body, "ValidationException", 400, fragment)


def test_list_indexes_pages_and_prefix(with_index: S3VectorsService) -> None:
    for name in ("img-a", "img-b", "img-c", "txt-a"):
        call(with_index, "CreateIndex", {**INDEX, "indexName": name, **INDEX_DEFINITION})
    seen: list[str] = []
    body: dict[str, Any] = {"vectorBucketArn": BUCKET_ARN, "prefix": "img-", "maxResults": 2}
    while True:
        page = call(with_index, "ListIndexes", body)
        seen += [i["indexName"] for i in page["indexes"]]
        if "nextToken" not in page:
            break
        body = {**body, "nextToken": page["nextToken"]}
    assert seen == ["img-a", "img-b", "img-c"]
    missing = {"vectorBucketName": "absent"}
    expect_error(with_index, "ListIndexes", missing, "NotFoundException", 404, "absent")


def test_tags_on_buckets_and_indexes(with_index: S3VectorsService) -> None:
    assert call(with_index, "TagResource", {"tags": {"a": "1", "b": "2"}}, arn=INDEX_ARN) == {}
    assert call(with_index, "TagResource", {"tags": {"b": "3"}}, arn=INDEX_ARN) == {}
    assert call(with_index, "ListTagsForResource", arn=INDEX_ARN) == {"tags": {"a": "1", "b": "3"}}
    assert call(with_index, "ListTagsForResource", arn=BUCKET_ARN) == {"tags": {}}
    query = {"tagKeys": ["a", "absent"]}
    assert call(with_index, "UntagResource", arn=INDEX_ARN, query=query) == {}
    assert call(with_index, "ListTagsForResource", arn=INDEX_ARN) == {"tags": {"b": "3"}}


def test_tags_go_with_their_resource(with_index: S3VectorsService) -> None:
    call(with_index, "TagResource", {"tags": {"a": "1"}}, arn=INDEX_ARN)
    call(with_index, "DeleteIndex", INDEX)
    call(with_index, "CreateIndex", {**INDEX, **INDEX_DEFINITION})
    assert call(with_index, "ListTagsForResource", arn=INDEX_ARN) == {"tags": {}}


@pytest.mark.parametrize(
    ("tags", "fragment"),
    [
        ({"": "x"}, "Invalid tag key ''"),
        ({"k" * 129: "x"}, "Invalid tag key"),
        ({"bad!key": "x"}, "Invalid tag key 'bad!key'"),
        ({"k": "v" * 257}, "Invalid value for tag 'k'"),
        ({"k": "semi;colon"}, "Invalid value for tag 'k'"),
        ({f"k{i}": "v" for i in range(51)}, "at most 50 tags"),
        (["k", "v"], "tags must be a JSON object"),
    ],
)
def test_tag_rules(with_index: S3VectorsService, tags: Any, fragment: str) -> None:
    body = {"tags": tags}
    expect_error(
        with_index, "TagResource", body, "ValidationException", 400, fragment, arn=INDEX_ARN
    )


def test_tag_rules_accept_the_documented_alphabet(with_index: S3VectorsService) -> None:
    tags = {"Ünïcode key 1_.:/=+-@": "välue with spaces", "k" * 128: "v" * 256, "empty": ""}
    call(with_index, "TagResource", {"tags": tags}, arn=BUCKET_ARN)
    assert call(with_index, "ListTagsForResource", arn=BUCKET_ARN) == {"tags": tags}


def test_tag_count_includes_existing_tags(with_index: S3VectorsService) -> None:
    call(with_index, "TagResource", {"tags": {f"k{i}": "v" for i in range(50)}}, arn=BUCKET_ARN)
    call(with_index, "TagResource", {"tags": {"k0": "replaced"}}, arn=BUCKET_ARN)
    body = {"tags": {"one-more": "v"}}
    expect_error(
        with_index, "TagResource", body, "ValidationException", 400, "leave 51", arn=BUCKET_ARN
    )


def test_tag_operations_need_an_existing_resource_and_keys(with_index: S3VectorsService) -> None:
    missing = f"{BUCKET_ARN}/index/absent"
    expect_error(
        with_index, "ListTagsForResource", {}, "NotFoundException", 404, "absent", arn=missing
    )
    expect_error(
        with_index, "ListTagsForResource", {}, "ValidationException", 400, "Invalid ARN", arn="x"
    )
    expect_error(
        with_index,
        "TagResource",
        {},
        "ValidationException",
        400,
        "tags is required",
        arn=BUCKET_ARN,
    )
    expect_error(
        with_index,
        "UntagResource",
        {},
        "ValidationException",
        400,
        "tagKeys is required",
        arn=BUCKET_ARN,
    )


def test_index_modes(with_index: S3VectorsService) -> None:
    body = {**INDEX, "indexMode": "CLASSIC"}
    error = expect_error(with_index, "UpdateIndexMode", body, "ValidationException", 400, "CLASSIC")
    assert "created before 2026-09-30" in error.message
    assert call(with_index, "UpdateIndexMode", {**INDEX, "indexMode": "ENHANCED"}) == {}
    body = {**INDEX, "indexMode": "FAST"}
    expect_error(with_index, "UpdateIndexMode", body, "ValidationException", 400, "indexMode must")

    bucket = {"vectorBucketName": "media"}
    assert (
        call(
            with_index, "PutVectorBucketDefaultIndexMode", {**bucket, "defaultIndexMode": "CLASSIC"}
        )
        == {}
    )
    got = call(with_index, "GetVectorBucket", bucket)["vectorBucket"]
    assert got["defaultIndexMode"] == "CLASSIC"
    call(with_index, "CreateIndex", {**INDEX, "indexName": "classic", **INDEX_DEFINITION})
    classic = call(with_index, "GetIndex", {**INDEX, "indexName": "classic"})["index"]
    assert classic["indexMode"] == "CLASSIC"
    assert call(with_index, "GetIndex", INDEX)["index"]["indexMode"] == "ENHANCED"
    call(with_index, "UpdateIndexMode", {**INDEX, "indexName": "classic", "indexMode": "ENHANCED"})
    assert (
        call(with_index, "GetIndex", {**INDEX, "indexName": "classic"})["index"]["indexMode"]
        == "ENHANCED"
    )
    expect_error(
        with_index,
        "PutVectorBucketDefaultIndexMode",
        bucket,
        "ValidationException",
        400,
        "defaultIndexMode is required",
    )


def test_update_metadata_configuration(with_index: S3VectorsService) -> None:
    empty_add = {**INDEX, "add": {"textSearchConfigurations": []}}
    assert call(with_index, "UpdateMetadataConfiguration", empty_add) == {"indexArn": INDEX_ARN}
    add = {**INDEX, "add": {"textSearchConfigurations": [{"metadataKey": "text"}]}}
    assert call(with_index, "UpdateMetadataConfiguration", add) == {"indexArn": INDEX_ARN}
    both = {**add, "delete": {"textSearchConfigurations": [{"metadataKey": "text"}]}}
    expect_error(
        with_index,
        "UpdateMetadataConfiguration",
        both,
        "ValidationException",
        400,
        "either add or delete",
    )
    missing = {**add, "indexName": "absent"}
    expect_error(
        with_index, "UpdateMetadataConfiguration", missing, "NotFoundException", 404, "absent"
    )


def test_closed_service_is_unavailable(service: S3VectorsService) -> None:
    service.close()
    expect_error(service, "ListVectorBuckets", {}, "ServiceUnavailableException", 503, "shut down")


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.operation)
def test_every_route_reaches_its_operation(service: S3VectorsService, route: Any) -> None:
    arn = "" if "tags" in route.path else None
    if route.operation == "ListVectorBuckets":
        assert call(service, route.operation, {}) == {"vectorBuckets": []}
        return
    with pytest.raises(ServiceError) as caught:
        call(service, route.operation, {}, arn=arn)
    # An empty request is the caller's mistake, never an internal error.
    assert caught.value.code == "ValidationException", caught.value.message
