"""S3 Vectors stand-in through boto3: text search configurations at CreateIndex and through
UpdateMetadataConfiguration, and their BUILDING → ACTIVE status, each rule answered with the
service's error code and status. (``queryTexts`` rules: ``test_s3vectors_text_query``; ranking:
``test_s3vectors_text_ranking``.)

Rules botocore enforces itself (required members, minimums) are sent once through the normal
client, which refuses them, and once through a client with parameter validation off, so that
the stand-in's own check answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError, ParamValidationError

from emulator.app import Emulator, EmulatorSettings
from emulator.s3vectors import SearchSettings
from tests.emulator.vector_index_helpers import (
    IndexRef,
    create_text_index,
    refused,
    service_error,
    text_configurations,
    text_query,
)

LANGUAGES = "en, fr, es, pt, it, de, nl, zh, ja, ko"
VECTOR = {"float32": [1.0, 0.0, 0.0, 0.0]}


@pytest.fixture
def raw(stand_in: Emulator) -> BaseClient:
    """An s3vectors client that sends requests botocore itself would refuse."""
    return stand_in.client("s3vectors", parameter_validation=False)


@pytest.fixture
def index(s3vectors: BaseClient) -> IndexRef:
    """An ENHANCED index with ``body`` (standard analyzer) and ``title`` (en) searchable and
    ``body`` non-filterable, holding two vectors."""
    ref = create_text_index(
        s3vectors,
        [{"metadataKey": "body"}, {"metadataKey": "title", "language": "en"}],
        non_filterable=["body"],
    )
    s3vectors.put_vectors(
        **ref.address(),
        vectors=[
            {"key": "a", "data": VECTOR, "metadata": {"body": "jazz piano", "title": "Jazz"}},
            {"key": "b", "data": {"float32": [0, 1, 0, 0]}, "metadata": {"body": "rock"}},
        ],
    )
    return ref


# Text search configurations at CreateIndex


def test_create_index_reports_active_configurations(s3vectors: BaseClient) -> None:
    ref = create_text_index(
        s3vectors,
        [{"metadataKey": "body", "language": "ja", "status": "BUILDING"}, {"metadataKey": "t"}],
        non_filterable=["body"],
    )
    index = s3vectors.get_index(indexArn=ref.arn)["index"]
    assert index["indexMode"] == "ENHANCED"
    assert index["metadataConfiguration"] == {
        "nonFilterableMetadataKeys": ["body"],
        "textSearchConfigurations": [
            {"metadataKey": "body", "language": "ja", "status": "ACTIVE"},
            {"metadataKey": "t", "status": "ACTIVE"},
        ],
    }


@pytest.mark.parametrize(
    ("text_search", "fragment", "path"),
    [
        (
            [{"metadataKey": f"k{n}"} for n in range(11)],
            "must have between 0 and 10 items, got 11",
            "metadataConfiguration.textSearchConfigurations",
        ),
        (
            [{"metadataKey": "body"}, {"metadataKey": "body", "language": "en"}],
            "configures metadata key 'body' more than once",
            "metadataConfiguration.textSearchConfigurations",
        ),
        (
            [{"metadataKey": "k" * 64}],
            "metadataKey must have a length between 1 and 63, got 64",
            "metadataConfiguration.textSearchConfigurations[0].metadataKey",
        ),
        (
            [{"metadataKey": "body", "language": "EN"}],
            f"language must be one of {LANGUAGES}, got 'EN'",
            "metadataConfiguration.textSearchConfigurations[0].language",
        ),
        (
            [{"metadataKey": "body", "status": "READY"}],
            "status must be one of ACTIVE, BUILDING, got 'READY'",
            "metadataConfiguration.textSearchConfigurations[0].status",
        ),
    ],
)
def test_create_index_configuration_rules(
    s3vectors: BaseClient, text_search: list[dict[str, Any]], fragment: str, path: str
) -> None:
    with pytest.raises(ClientError) as caught:
        create_text_index(s3vectors, text_search)
    response = service_error(caught.value, "ValidationException", 400, fragment)
    assert response["fieldList"][0]["path"] == path


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"language": "en"}, "textSearchConfigurations[0].metadataKey is required"),
        ({"metadataKey": ""}, "metadataKey must have a length between 1 and 63, got 0"),
        ({"metadataKey": 7}, "metadataKey must be a JSON string, got number"),
    ],
)
def test_create_index_rules_botocore_checks_first(
    s3vectors: BaseClient, raw: BaseClient, entry: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ParamValidationError):
        create_text_index(s3vectors, [entry])
    with pytest.raises(ClientError) as caught:
        create_text_index(raw, [entry])
    service_error(caught.value, "ValidationException", 400, fragment)


def test_create_index_with_text_search_needs_an_enhanced_index(s3vectors: BaseClient) -> None:
    with pytest.raises(ClientError) as caught:
        create_text_index(s3vectors, [{"metadataKey": "body"}], default_mode="CLASSIC")
    service_error(caught.value, "ValidationException", 400, "requires an ENHANCED index")
    classic = create_text_index(s3vectors, [], default_mode="CLASSIC")
    assert text_configurations(s3vectors, classic) == []


# UpdateMetadataConfiguration


def test_added_configuration_is_building_for_one_read_then_active(
    s3vectors: BaseClient, index: IndexRef
) -> None:
    update = s3vectors.update_metadata_configuration
    answer = update(indexArn=index.arn, add={"textSearchConfigurations": [{"metadataKey": "x"}]})
    assert answer["indexArn"] == index.arn
    assert text_configurations(s3vectors, index)[2] == {"metadataKey": "x", "status": "BUILDING"}
    assert text_configurations(s3vectors, index)[2] == {"metadataKey": "x", "status": "ACTIVE"}
    update(**index.address(), add={"textSearchConfigurations": [{"metadataKey": "y"}]})
    query = s3vectors.query_vectors
    refused(
        query,
        "ValidationException",
        400,
        "metadata key 'y' is BUILDING (being backfilled) and not yet serving queries",
        indexArn=index.arn,
        topK=3,
        queryTexts=text_query("y"),
    )
    assert query(indexArn=index.arn, topK=3, queryTexts=text_query("y"))["vectors"] == []
    update(indexArn=index.arn, delete={"textSearchConfigurations": [{"metadataKey": "y"}]})
    assert [c["metadataKey"] for c in text_configurations(s3vectors, index)] == [
        "body",
        "title",
        "x",
    ]
    refused(
        query,
        "ValidationException",
        400,
        "Metadata key 'y' is not full-text searchable",
        indexArn=index.arn,
        topK=3,
        queryTexts=text_query("y"),
    )


def test_an_empty_add_changes_nothing(s3vectors: BaseClient, index: IndexRef) -> None:
    update = s3vectors.update_metadata_configuration
    update(indexArn=index.arn, add={"textSearchConfigurations": []})
    update(indexArn=index.arn, add={})
    assert [c["status"] for c in text_configurations(s3vectors, index)] == ["ACTIVE", "ACTIVE"]


@pytest.mark.parametrize(
    ("members", "code", "status", "fragment"),
    [
        ({}, "ValidationException", 400, "Specify either add or delete, but not both"),
        (
            {
                "add": {"textSearchConfigurations": [{"metadataKey": "x"}]},
                "delete": {"textSearchConfigurations": [{"metadataKey": "body"}]},
            },
            "ValidationException",
            400,
            "Specify either add or delete, but not both",
        ),
        (
            {"add": {"textSearchConfigurations": [{"metadataKey": "title", "language": "fr"}]}},
            "ConflictException",
            409,
            "already has a text search configuration for metadata key 'title'",
        ),
        (
            {"add": {"textSearchConfigurations": [{"metadataKey": f"k{n}"} for n in range(9)]}},
            "ValidationException",
            400,
            "at most 10 text search configurations; index 'index' has 2 and the request adds 9",
        ),
        (
            {"add": {"textSearchConfigurations": [{"metadataKey": f"k{n}"} for n in range(11)]}},
            "ValidationException",
            400,
            "add.textSearchConfigurations must have between 0 and 10 items, got 11",
        ),
        (
            {"add": {"textSearchConfigurations": [{"metadataKey": "x"}, {"metadataKey": "x"}]}},
            "ValidationException",
            400,
            "configures metadata key 'x' more than once",
        ),
        (
            {"add": {"textSearchConfigurations": [{"metadataKey": "x", "language": "sv"}]}},
            "ValidationException",
            400,
            f"add.textSearchConfigurations[0].language must be one of {LANGUAGES}",
        ),
        (
            {"add": {"textSearchConfigurations": [{"metadataKey": "x" * 64}]}},
            "ValidationException",
            400,
            "metadataKey must have a length between 1 and 63, got 64",
        ),
        (
            {"delete": {"textSearchConfigurations": [{"metadataKey": "absent"}]}},
            "ValidationException",
            400,
            "has no text search configuration for metadata key 'absent'",
        ),
        (
            {"delete": {"textSearchConfigurations": [{"metadataKey": f"k{n}"} for n in range(11)]}},
            "ValidationException",
            400,
            "delete.textSearchConfigurations must have between 1 and 10 items, got 11",
        ),
        (
            {"delete": {"textSearchConfigurations": [{"metadataKey": "body"}] * 2}},
            "ValidationException",
            400,
            "names metadata key 'body' more than once",
        ),
        (
            {"delete": {}},
            "ValidationException",
            400,
            "delete.textSearchConfigurations is required",
        ),
    ],
)
def test_update_metadata_configuration_rules(
    s3vectors: BaseClient,
    index: IndexRef,
    members: dict[str, Any],
    code: str,
    status: int,
    fragment: str,
) -> None:
    update = s3vectors.update_metadata_configuration
    refused(update, code, status, fragment, indexArn=index.arn, **members)
    assert [c["metadataKey"] for c in text_configurations(s3vectors, index)] == ["body", "title"]


@pytest.mark.parametrize(
    ("members", "fragment"),
    [
        ({"delete": {"textSearchConfigurations": []}}, "must have between 1 and 10 items, got 0"),
        ({"delete": {"textSearchConfigurations": [{}]}}, "[0].metadataKey is required"),
        ({"add": {"textSearchConfigurations": [{"language": "en"}]}}, "metadataKey is required"),
    ],
)
def test_update_rules_botocore_checks_first(
    s3vectors: BaseClient, raw: BaseClient, index: IndexRef, members: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ParamValidationError):
        s3vectors.update_metadata_configuration(indexArn=index.arn, **members)
    update = raw.update_metadata_configuration
    refused(update, "ValidationException", 400, fragment, indexArn=index.arn, **members)


def test_update_needs_an_existing_enhanced_index(s3vectors: BaseClient, index: IndexRef) -> None:
    add = {"textSearchConfigurations": [{"metadataKey": "x"}]}
    update = s3vectors.update_metadata_configuration
    missing = {"vectorBucketName": index.bucket, "indexName": "absent"}
    refused(update, "NotFoundException", 404, "Index 'absent' does not exist", **missing, add=add)
    classic = create_text_index(s3vectors, [], default_mode="CLASSIC")
    fragment = "must be in ENHANCED mode to change its text search configurations"
    refused(update, "ValidationException", 400, fragment, indexArn=classic.arn, add=add)


# Backfill reads as a setting


@pytest.fixture(scope="module", params=[0, 3])
def slow_backfill(request: pytest.FixtureRequest) -> Iterator[tuple[BaseClient, int]]:
    """A separate in-memory stand-in whose added configurations stay BUILDING for ``reads``."""
    reads = request.param
    settings = EmulatorSettings(search=SearchSettings(text_backfill_reads=reads))
    with Emulator(settings) as running:
        yield running.client("s3vectors"), reads


def test_backfill_lasts_the_configured_number_of_reads(
    slow_backfill: tuple[BaseClient, int],
) -> None:
    client, reads = slow_backfill
    ref = create_text_index(client, [])
    client.update_metadata_configuration(
        indexArn=ref.arn, add={"textSearchConfigurations": [{"metadataKey": "body"}]}
    )
    statuses = [text_configurations(client, ref)[0]["status"] for _ in range(reads + 2)]
    assert statuses == ["BUILDING"] * reads + ["ACTIVE", "ACTIVE"]
    with pytest.raises(ValueError, match="must not be negative"):
        SearchSettings(text_backfill_reads=-1)
