"""Object storage as the stand-in services see it: the S3 objects a request names.

Bedrock reads ``s3Location`` sources and writes async results to S3; in the stand-in S3 is moto's
server, reached through an ordinary boto3 client. Unit tests use the in-memory store.
"""

from __future__ import annotations

import re
import threading
from typing import Protocol

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

_S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])/(?P<key>.+)$")


class ObjectNotFoundError(LookupError):
    """The object (or its bucket) does not exist."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` → ``("bucket", "some/key")``; ValueError if not an object URI."""
    match = _S3_URI.match(uri)
    if match is None:
        raise ValueError(f"not an S3 object URI: {uri!r}")
    return match["bucket"], match["key"]


class ObjectStore(Protocol):
    """What the stand-in services need of S3."""

    def size(self, uri: str) -> int:
        """Size in bytes of the object at ``uri``; ObjectNotFoundError if absent."""
        ...

    def read(self, uri: str) -> bytes:
        """The object's bytes; ObjectNotFoundError if absent."""
        ...

    def write(self, uri: str, data: bytes, content_type: str) -> None:
        """Create or replace the object at ``uri``."""
        ...


class S3ObjectStore:
    """An ObjectStore over a boto3 S3 client (moto's server in the stand-in)."""

    def __init__(self, endpoint_url: str, region: str) -> None:
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id="novaflow-emulator",
            aws_secret_access_key="novaflow-emulator",
            config=Config(retries={"mode": "standard"}, max_pool_connections=32),
        )

    def size(self, uri: str) -> int:
        bucket, key = split_s3_uri(uri)
        try:
            return int(self._client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except ClientError as err:
            raise ObjectNotFoundError(uri) from err

    def read(self, uri: str) -> bytes:
        bucket, key = split_s3_uri(uri)
        try:
            return self._client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as err:
            raise ObjectNotFoundError(uri) from err

    def write(self, uri: str, data: bytes, content_type: str) -> None:
        bucket, key = split_s3_uri(uri)
        try:
            self._client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)
        except ClientError as err:
            raise ObjectNotFoundError(uri) from err


class MemoryObjectStore:
    """An ObjectStore in a dict, for unit tests of the services."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self._objects: dict[str, bytes] = dict(objects or {})
        self._lock = threading.Lock()

    def size(self, uri: str) -> int:
        return len(self.read(uri))

    def read(self, uri: str) -> bytes:
        split_s3_uri(uri)
        with self._lock:
            try:
                return self._objects[uri]
            except KeyError:
                raise ObjectNotFoundError(uri) from None

    def write(self, uri: str, data: bytes, content_type: str) -> None:
        split_s3_uri(uri)
        with self._lock:
            self._objects[uri] = bytes(data)

    def uris(self) -> list[str]:
        """Every stored URI, sorted."""
        with self._lock:
            return sorted(self._objects)
