"""The text and hybrid requests novaflow sends are valid for botocore's S3 Vectors model: the
Stubber checks each against the service model before it answers, so a shape error cannot hide
behind the stand-in accepting it."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import numpy as np
import pytest
from botocore.stub import Stubber

from tasks.settings import IndexSettings
from tasks.vector_store import SEARCHABLE_TEXT_KEY, ensure_index, query, text_search_status

WHERE = {"vectorBucketName": "bucket", "indexName": "notes"}
INDEX = {
    **WHERE,
    "indexArn": "arn:aws:s3vectors:us-east-1:123456789012:bucket/bucket/index/notes",
    "vectorBucketName": "bucket",
    "creationTime": "2026-12-01T00:00:00Z",
    "dataType": "float32",
    "dimension": 4,
    "distanceMetric": "cosine",
}


@pytest.fixture
def stubbed() -> Iterator[tuple[object, Stubber]]:
    client = boto3.client("s3vectors", region_name="us-east-1",
                          aws_access_key_id="k", aws_secret_access_key="s")  # fmt: skip
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _configured(status: str) -> dict[str, object]:
    return {"index": {**INDEX, "metadataConfiguration": {
        "nonFilterableMetadataKeys": ["source_uri", SEARCHABLE_TEXT_KEY],
        "textSearchConfigurations": [
            {"metadataKey": SEARCHABLE_TEXT_KEY, "language": "en", "status": status}],
    }}}  # fmt: skip


@pytest.mark.parametrize("mode", ["vector", "text", "hybrid"])
def test_each_mode_sends_a_query_the_model_accepts(stubbed, mode: str) -> None:  # type: ignore[no-untyped-def]
    client, stubber = stubbed
    vector = None if mode == "text" else np.ones(4, dtype=np.float32)
    text = None if mode == "vector" else "error E-4471 " * 100  # cut to 1,024 characters
    expected: dict[str, object] = {**WHERE, "topK": 3, "returnMetadata": True,
                                   "returnDistance": True}  # fmt: skip
    if vector is not None:
        expected["queryVector"] = {"float32": [1.0] * 4}
    if text is not None:
        expected["queryTexts"] = [{"text": text[:1024], "metadataKey": SEARCHABLE_TEXT_KEY}]
        expected["returnScores"] = True
    scores = {"bm25Scores": [{"metadataKey": SEARCHABLE_TEXT_KEY, "score": 2.5}]}
    stubber.add_response(
        "query_vectors",
        {"vectors": [{"key": "a", "metadata": {}, "scores": scores}], "distanceMetric": "cosine"},
        expected,
    )

    (hit,) = query(client, IndexSettings(vector_bucket="bucket", index="notes"), vector, 3,
                   text=text)  # fmt: skip

    assert hit["key"] == "a"
    assert hit["scores"] == scores
    assert hit["distance"] is None


def test_an_index_is_made_text_searchable_and_waited_for(stubbed) -> None:  # type: ignore[no-untyped-def]
    client, stubber = stubbed
    settings = IndexSettings(vector_bucket="bucket", index="notes", searchable_text=True)
    stubber.add_response("get_vector_bucket", {"vectorBucket": {
        "vectorBucketName": "bucket", "vectorBucketArn": "arn:aws:s3vectors:us-east-1:1:bucket/b",
        "creationTime": "2026-12-01T00:00:00Z"}}, {"vectorBucketName": "bucket"})  # fmt: skip
    configuration = {"nonFilterableMetadataKeys": ["source_uri"]}
    plain = {"index": {**INDEX, "indexMode": "ENHANCED", "metadataConfiguration": configuration}}
    stubber.add_response("get_index", plain, WHERE)  # one read of an index that exists
    stubber.add_response(
        "update_metadata_configuration",
        {"indexArn": INDEX["indexArn"]},
        {**WHERE, "add": {"textSearchConfigurations": [
            {"metadataKey": SEARCHABLE_TEXT_KEY, "language": "en"}]}},
    )  # fmt: skip
    stubber.add_response("get_index", _configured("ACTIVE"), WHERE)

    keys = ensure_index(client, settings, 4)

    assert keys == {"source_uri"}  # the text stays filterable on an index made without it


def test_the_status_of_the_searchable_text_is_read_from_the_index(stubbed) -> None:  # type: ignore[no-untyped-def]
    client, stubber = stubbed
    stubber.add_response("get_index", _configured("BUILDING"), WHERE)
    stubber.add_client_error("get_index", "NotFoundException", http_status_code=404)
    settings = IndexSettings(vector_bucket="bucket", index="notes")
    assert text_search_status(client, settings) == "BUILDING"
    assert text_search_status(client, settings) is None
