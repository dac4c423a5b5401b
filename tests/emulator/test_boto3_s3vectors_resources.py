"""S3 Vectors stand-in through real boto3 clients over HTTP: vector buckets, policies, indexes,
tags, index modes, their paginators and the errors they answer with (aws-apis.md §2).

The stand-in is shared by the whole session, so every test makes its own uniquely named buckets.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tests.emulator.vector_index_helpers import IndexRef

REGION, ACCOUNT = "us-east-1", "123456789012"
BOTOCORE_1_44_OPERATIONS = (
    "update_index_mode",
    "put_vector_bucket_default_index_mode",
    "update_metadata_configuration",
)
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3vectors:QueryVectors"}],
}


def unique_name(prefix: str) -> str:
    """A bucket or index name no other test uses: ``prefix`` plus a random hex suffix."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def bucket_arn(bucket: str) -> str:
    """The ARN the stand-in gives a vector bucket named ``bucket``."""
    return f"arn:aws:s3vectors:{REGION}:{ACCOUNT}:bucket/{bucket}"


def create_index(
    client: BaseClient, bucket: str, name: str, *, metric: str = "cosine", dimension: int = 4
) -> IndexRef:
    """Create a float32 index with ``body`` declared non-filterable; returns its reference."""
    answer = client.create_index(
        vectorBucketName=bucket,
        indexName=name,
        dataType="float32",
        dimension=dimension,
        distanceMetric=metric,
        metadataConfiguration={"nonFilterableMetadataKeys": ["body"]},
    )
    return IndexRef(bucket, name, answer["indexArn"])


def assert_service_error(error: ClientError, code: str, status: int, fragment: str) -> None:
    """Check the error code botocore parsed, the HTTP status and a fragment of the message."""
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert fragment in error.response["Error"]["Message"]


def assert_recent(moment: datetime) -> None:
    """``moment`` (a parsed ``creationTime``) is an aware datetime within the last minute."""
    assert moment.tzinfo is not None
    assert timedelta(0) <= datetime.now(UTC) - moment < timedelta(minutes=1)


# Success paths


def test_the_client_has_the_operations_of_botocore_1_44(s3vectors: BaseClient) -> None:
    assert set(BOTOCORE_1_44_OPERATIONS) <= set(dir(s3vectors))
    assert s3vectors.can_paginate("query_vectors")


def test_vector_bucket_lifecycle_by_name(s3vectors: BaseClient) -> None:
    name = unique_name("life")
    created = s3vectors.create_vector_bucket(vectorBucketName=name)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert created["vectorBucketArn"] == bucket_arn(name)

    bucket = s3vectors.get_vector_bucket(vectorBucketName=name)["vectorBucket"]
    assert bucket["vectorBucketName"] == name
    assert bucket["vectorBucketArn"] == bucket_arn(name)
    assert bucket["encryptionConfiguration"] == {"sseType": "AES256"}
    assert bucket["defaultIndexMode"] == "ENHANCED"
    assert_recent(bucket["creationTime"])

    listed = s3vectors.list_vector_buckets(prefix=name)["vectorBuckets"]
    assert [(b["vectorBucketName"], b["vectorBucketArn"]) for b in listed] == [
        (name, bucket_arn(name))
    ]
    deleted = s3vectors.delete_vector_bucket(vectorBucketName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert s3vectors.list_vector_buckets(prefix=name)["vectorBuckets"] == []


def test_vector_bucket_addressed_by_arn(s3vectors: BaseClient) -> None:
    name = unique_name("byarn")
    arn = s3vectors.create_vector_bucket(
        vectorBucketName=name,
        encryptionConfiguration={"sseType": "AES256"},
        tags={"team": "search"},
    )["vectorBucketArn"]
    found = s3vectors.get_vector_bucket(vectorBucketArn=arn)["vectorBucket"]
    assert found["vectorBucketName"] == name
    index = create_index(s3vectors, name, "pages.v1")
    assert [i["indexArn"] for i in s3vectors.list_indexes(vectorBucketArn=arn)["indexes"]] == [
        index.arn
    ]
    s3vectors.delete_index(indexArn=index.arn)
    s3vectors.delete_vector_bucket(vectorBucketArn=arn)
    with pytest.raises(s3vectors.exceptions.NotFoundException) as caught:
        s3vectors.get_vector_bucket(vectorBucketArn=arn)
    assert_service_error(caught.value, "NotFoundException", 404, f"'{name}' does not exist")


def test_bucket_policy_put_get_delete(s3vectors: BaseClient) -> None:
    name = unique_name("policy")
    s3vectors.create_vector_bucket(vectorBucketName=name)
    s3vectors.put_vector_bucket_policy(vectorBucketName=name, policy=json.dumps(POLICY))
    policy = s3vectors.get_vector_bucket_policy(vectorBucketArn=bucket_arn(name))["policy"]
    assert json.loads(policy) == POLICY

    s3vectors.delete_vector_bucket_policy(vectorBucketName=name)
    with pytest.raises(s3vectors.exceptions.NotFoundException) as caught:
        s3vectors.get_vector_bucket_policy(vectorBucketName=name)
    assert_service_error(caught.value, "NotFoundException", 404, "has no bucket policy")
    # Deleting a policy that is not there succeeds: the operation is idempotent.
    s3vectors.delete_vector_bucket_policy(vectorBucketName=name)


def test_index_lifecycle_with_non_filterable_keys(s3vectors: BaseClient) -> None:
    bucket = unique_name("indexes")
    s3vectors.create_vector_bucket(vectorBucketName=bucket)
    index = create_index(s3vectors, bucket, "pages.v1", metric="euclidean", dimension=1024)
    assert index.arn == f"{bucket_arn(bucket)}/index/pages.v1"

    by_name = s3vectors.get_index(**index.address())["index"]
    by_arn = s3vectors.get_index(indexArn=index.arn)["index"]
    assert by_name == by_arn
    assert {k: v for k, v in by_name.items() if k != "creationTime"} == {
        "vectorBucketName": bucket,
        "indexName": "pages.v1",
        "indexArn": index.arn,
        "dataType": "float32",
        "dimension": 1024,
        "distanceMetric": "euclidean",
        "metadataConfiguration": {"nonFilterableMetadataKeys": ["body"]},
        "encryptionConfiguration": {"sseType": "AES256"},
        "indexMode": "ENHANCED",
    }
    assert_recent(by_name["creationTime"])

    summaries = s3vectors.list_indexes(vectorBucketName=bucket)["indexes"]
    assert [(s["indexName"], s["indexArn"], s["vectorBucketName"]) for s in summaries] == [
        ("pages.v1", index.arn, bucket)
    ]
    s3vectors.delete_index(indexArn=index.arn)
    assert s3vectors.list_indexes(vectorBucketName=bucket)["indexes"] == []
    with pytest.raises(s3vectors.exceptions.NotFoundException) as caught:
        s3vectors.get_index(indexArn=index.arn)
    assert_service_error(caught.value, "NotFoundException", 404, "Index 'pages.v1' does not")


def test_tags_on_buckets_and_indexes(s3vectors: BaseClient) -> None:
    bucket = unique_name("tags")
    s3vectors.create_vector_bucket(vectorBucketName=bucket, tags={"team": "search"})
    index = create_index(s3vectors, bucket, "tagged.index")
    # Every character of the tag alphabet that needs escaping in the path or the query string.
    awkward_key = "cost centre/a+b=c@d:e_f.g-h"
    s3vectors.tag_resource(resourceArn=index.arn, tags={awkward_key: "1 + 1", "stage": "dev"})
    assert s3vectors.list_tags_for_resource(resourceArn=index.arn)["tags"] == {
        awkward_key: "1 + 1",
        "stage": "dev",
    }
    s3vectors.untag_resource(resourceArn=index.arn, tagKeys=[awkward_key, "not-there"])
    assert s3vectors.list_tags_for_resource(resourceArn=index.arn)["tags"] == {"stage": "dev"}
    # Tags belong to their resource: the bucket keeps its own.
    assert s3vectors.list_tags_for_resource(resourceArn=bucket_arn(bucket))["tags"] == {
        "team": "search"
    }


def test_default_index_mode_and_update_index_mode(s3vectors: BaseClient) -> None:
    bucket = unique_name("modes")
    s3vectors.create_vector_bucket(vectorBucketName=bucket)
    enhanced = create_index(s3vectors, bucket, "enhanced")
    with pytest.raises(s3vectors.exceptions.ValidationException) as caught:
        s3vectors.update_index_mode(indexArn=enhanced.arn, indexMode="CLASSIC")
    assert_service_error(caught.value, "ValidationException", 400, "created before 2026-09-30")
    assert caught.value.response["fieldList"][0]["path"] == "indexMode"
    s3vectors.update_index_mode(indexArn=enhanced.arn, indexMode="ENHANCED")
    assert s3vectors.get_index(indexArn=enhanced.arn)["index"]["indexMode"] == "ENHANCED"

    s3vectors.put_vector_bucket_default_index_mode(
        vectorBucketName=bucket, defaultIndexMode="CLASSIC"
    )
    bucket_now = s3vectors.get_vector_bucket(vectorBucketName=bucket)["vectorBucket"]
    assert bucket_now["defaultIndexMode"] == "CLASSIC"
    classic = create_index(s3vectors, bucket, "classic")
    assert s3vectors.get_index(indexArn=classic.arn)["index"]["indexMode"] == "CLASSIC"
    assert s3vectors.get_index(indexArn=enhanced.arn)["index"]["indexMode"] == "ENHANCED"


def test_full_text_search_needs_a_text_search_configuration(s3vectors: BaseClient) -> None:
    # Full-text search itself is tested in test_s3vectors_text_search and its siblings.
    bucket = unique_name("fulltext")
    s3vectors.create_vector_bucket(vectorBucketName=bucket)
    index = create_index(s3vectors, bucket, "texts")
    with pytest.raises(s3vectors.exceptions.ValidationException) as caught:
        s3vectors.query_vectors(
            indexArn=index.arn, topK=3, queryTexts=[{"text": "jazz", "metadataKey": "body"}]
        )
    assert_service_error(caught.value, "ValidationException", 400, "is not full-text searchable")
    s3vectors.update_metadata_configuration(
        indexArn=index.arn,
        add={"textSearchConfigurations": [{"metadataKey": "body", "language": "en"}]},
    )
    configuration = s3vectors.get_index(indexArn=index.arn)["index"]["metadataConfiguration"]
    assert configuration["textSearchConfigurations"][0]["metadataKey"] == "body"


# Paginators


def test_list_vector_buckets_paginator_with_small_pages(s3vectors: BaseClient) -> None:
    prefix = unique_name("pages")
    names = [f"{prefix}-{n}" for n in range(5)]
    for name in reversed(names):
        s3vectors.create_vector_bucket(vectorBucketName=name)
    pages = list(
        s3vectors.get_paginator("list_vector_buckets").paginate(
            prefix=prefix, PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(page["vectorBuckets"]) for page in pages] == [2, 2, 1]
    assert [b["vectorBucketName"] for page in pages for b in page["vectorBuckets"]] == names
    assert "nextToken" not in pages[-1]


def test_list_indexes_paginator_with_small_pages(s3vectors: BaseClient) -> None:
    bucket = unique_name("ixpages")
    s3vectors.create_vector_bucket(vectorBucketName=bucket)
    names = [f"index.{n}" for n in range(5)]
    for name in names:
        create_index(s3vectors, bucket, name)
    paginator = s3vectors.get_paginator("list_indexes")
    result = paginator.paginate(
        vectorBucketArn=bucket_arn(bucket), PaginationConfig={"PageSize": 2}
    ).build_full_result()
    assert [i["indexName"] for i in result["indexes"]] == names
    pages = list(paginator.paginate(vectorBucketName=bucket, prefix="index.", maxResults=3))
    assert [len(page["indexes"]) for page in pages] == [3, 2]


# Errors


BucketCall = Callable[[BaseClient, str], object]
NOT_FOUND_CASES: list[tuple[str, BucketCall, str]] = [
    (
        "get-missing-bucket",
        lambda c, b: c.get_vector_bucket(vectorBucketName=f"{b}-missing"),
        "-missing' does not exist",
    ),
    (
        "index-in-missing-bucket",
        lambda c, b: create_index(c, f"{b}-missing", "pages"),
        "-missing' does not exist",
    ),
    (
        "list-indexes-of-missing-bucket",
        lambda c, b: c.list_indexes(vectorBucketName=f"{b}-missing"),
        "-missing' does not exist",
    ),
    (
        "get-missing-index",
        lambda c, b: c.get_index(vectorBucketName=b, indexName="missing"),
        "Index 'missing' does not exist",
    ),
    (
        "delete-missing-index",
        lambda c, b: c.delete_index(indexArn=f"{bucket_arn(b)}/index/missing"),
        "Index 'missing' does not exist",
    ),
    (
        "query-missing-index",
        lambda c, b: c.query_vectors(
            vectorBucketName=b, indexName="missing", topK=1, queryVector={"float32": [1.0]}
        ),
        "Index 'missing' does not exist",
    ),
    (
        "tags-of-missing-bucket",
        lambda c, b: c.list_tags_for_resource(resourceArn=bucket_arn(f"{b}-missing")),
        "-missing' does not exist",
    ),
]


@pytest.mark.parametrize(
    ("call", "fragment"),
    [case[1:] for case in NOT_FOUND_CASES],
    ids=[case[0] for case in NOT_FOUND_CASES],
)
def test_missing_resources_are_not_found_404(
    s3vectors: BaseClient, call: BucketCall, fragment: str
) -> None:
    bucket = unique_name("nf")
    s3vectors.create_vector_bucket(vectorBucketName=bucket)
    with pytest.raises(s3vectors.exceptions.NotFoundException) as caught:
        call(s3vectors, bucket)
    assert_service_error(caught.value, "NotFoundException", 404, fragment)


def test_duplicate_bucket_is_a_conflict_409(s3vectors: BaseClient) -> None:
    name = unique_name("dup")
    s3vectors.create_vector_bucket(vectorBucketName=name)
    with pytest.raises(s3vectors.exceptions.ConflictException) as caught:
        s3vectors.create_vector_bucket(vectorBucketName=name)
    assert_service_error(caught.value, "ConflictException", 409, f"'{name}' already exists")


def test_duplicate_index_is_a_conflict_409(s3vectors: BaseClient) -> None:
    bucket = unique_name("dupindex")
    s3vectors.create_vector_bucket(vectorBucketName=bucket)
    create_index(s3vectors, bucket, "pages")
    with pytest.raises(s3vectors.exceptions.ConflictException) as caught:
        create_index(s3vectors, bucket, "pages", metric="euclidean")
    assert_service_error(caught.value, "ConflictException", 409, "Index 'pages' already exists")


def test_deleting_a_bucket_with_an_index_is_a_conflict_409(s3vectors: BaseClient) -> None:
    bucket = unique_name("nonempty")
    s3vectors.create_vector_bucket(vectorBucketName=bucket)
    create_index(s3vectors, bucket, "pages")
    with pytest.raises(s3vectors.exceptions.ConflictException) as caught:
        s3vectors.delete_vector_bucket(vectorBucketName=bucket)
    assert_service_error(caught.value, "ConflictException", 409, "is not empty")
    assert s3vectors.get_vector_bucket(vectorBucketName=bucket)["vectorBucket"]


def test_bucket_name_with_a_dot_is_a_validation_error_400(s3vectors: BaseClient) -> None:
    name = f"{unique_name('dotted')}.bucket"
    with pytest.raises(s3vectors.exceptions.ValidationException) as caught:
        s3vectors.create_vector_bucket(vectorBucketName=name)
    assert_service_error(caught.value, "ValidationException", 400, "Invalid vector bucket name")
    assert caught.value.response["message"] == caught.value.response["Error"]["Message"]
    [field] = caught.value.response["fieldList"]
    assert field["path"] == "vectorBucketName"
    assert "lowercase letters, digits and hyphens" in field["message"]
    assert s3vectors.list_vector_buckets(prefix=name.split(".")[0])["vectorBuckets"] == []
