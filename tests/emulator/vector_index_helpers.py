"""What the boto3 S3 Vectors tests share."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError


@dataclass(frozen=True)
class IndexRef:
    """A vector index the test created: its bucket, its name and its ARN."""

    bucket: str
    name: str
    arn: str

    def address(self) -> dict[str, str]:
        """The request members that name the index by bucket and index name."""
        return {"vectorBucketName": self.bucket, "indexName": self.name}


def create_text_index(
    client: BaseClient,
    text_search: Sequence[dict[str, Any]],
    *,
    dimension: int = 4,
    non_filterable: Sequence[str] = (),
    default_mode: str | None = None,
    prefix: str = "text",
) -> IndexRef:
    """A new bucket (whose default index mode is set to ``default_mode`` first, if given)
    holding one cosine index with the ``text_search`` configurations and ``non_filterable``
    keys."""
    bucket = f"{prefix}-{uuid.uuid4().hex[:12]}"
    client.create_vector_bucket(vectorBucketName=bucket)
    if default_mode is not None:
        client.put_vector_bucket_default_index_mode(
            vectorBucketName=bucket, defaultIndexMode=default_mode
        )
    configuration: dict[str, Any] = {"textSearchConfigurations": list(text_search)}
    if non_filterable:
        configuration["nonFilterableMetadataKeys"] = list(non_filterable)
    answer = client.create_index(
        vectorBucketName=bucket,
        indexName="index",
        dataType="float32",
        dimension=dimension,
        distanceMetric="cosine",
        metadataConfiguration=configuration,
    )
    return IndexRef(bucket, "index", answer["indexArn"])


def service_error(error: ClientError, code: str, status: int, fragment: str) -> dict[str, Any]:
    """Check the error code botocore parsed, the HTTP status and a fragment of the message;
    returns the parsed response (``fieldList`` and all)."""
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert fragment in error.response["Error"]["Message"], error.response["Error"]["Message"]
    return dict(error.response)


def refused(call: Any, code: str, status: int, fragment: str, **members: Any) -> dict[str, Any]:
    """Call ``call(**members)`` expecting the service error ``code`` with ``status`` and a
    message holding ``fragment``; returns the parsed response."""
    with pytest.raises(ClientError) as caught:
        call(**members)
    return service_error(caught.value, code, status, fragment)


def text_configurations(client: BaseClient, ref: IndexRef) -> list[dict[str, Any]]:
    """The textSearchConfigurations GetIndex reports (one read of the index)."""
    index = client.get_index(indexArn=ref.arn)["index"]
    return list(index.get("metadataConfiguration", {}).get("textSearchConfigurations", []))


def text_query(key: str, text: str = "jazz") -> list[dict[str, str]]:
    """A ``queryTexts`` member searching ``text`` in ``key``."""
    return [{"text": text, "metadataKey": key}]
