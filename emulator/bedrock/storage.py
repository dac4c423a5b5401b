"""S3 as a batch job sees it: the input location's objects, and the output it writes.

Batch inference reads a folder of JSONL files, so beyond reading and writing one object it needs
to list a prefix and to know whether a bucket exists. In the stand-in S3 is moto's server,
reached through an ordinary boto3 client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from botocore.exceptions import ClientError

from emulator.objects import S3ObjectStore


@dataclass(frozen=True)
class StoredObject:
    """An object found under a prefix: its ``s3://`` URI and size in bytes."""

    uri: str
    size: int


class BatchStorage(Protocol):
    """What the batch service needs of S3."""

    def bucket_exists(self, bucket: str) -> bool:
        """Whether ``bucket`` exists (and may be used)."""
        ...

    def find(self, bucket: str, key: str) -> StoredObject | None:
        """The object at exactly ``key``, if there is one."""
        ...

    def list_prefix(self, bucket: str, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with ``prefix``, in key order."""
        ...

    def read(self, uri: str) -> bytes:
        """The object's bytes; ObjectNotFoundError if absent."""
        ...

    def write(self, uri: str, data: bytes, content_type: str) -> None:
        """Create or replace the object at ``uri``; ObjectNotFoundError if its bucket is absent."""
        ...


class S3BatchStorage(S3ObjectStore):
    """A BatchStorage over the services' S3 object store (moto's server in the stand-in), which
    also finds objects and lists prefixes."""

    def bucket_exists(self, bucket: str) -> bool:
        try:
            self._client.head_bucket(Bucket=bucket)
        except ClientError:
            return False
        return True

    def find(self, bucket: str, key: str) -> StoredObject | None:
        if not key:
            return None
        try:
            head = self._client.head_object(Bucket=bucket, Key=key)
        except ClientError:
            return None
        return StoredObject(f"s3://{bucket}/{key}", int(head["ContentLength"]))

    def list_prefix(self, bucket: str, prefix: str) -> list[StoredObject]:
        found: list[StoredObject] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                found.append(StoredObject(f"s3://{bucket}/{item['Key']}", int(item["Size"])))
        return sorted(found, key=lambda stored: stored.uri)


def split_location(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix")``; the key may be empty."""
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    return bucket, key
