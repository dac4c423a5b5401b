"""S3 objects of the corpus: parsing ``s3://`` URIs, listing a prefix, reading object heads.

Part of corpus input (see :mod:`tasks.corpus.resolve`). Every call goes through the boto3 S3
client it is given, so the same code serves AWS and the local stand-in.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

from botocore.client import BaseClient
from botocore.exceptions import ClientError, ParamValidationError

from tasks.corpus.manifest import ManifestRow, Rejection
from tasks.corpus.modality import (
    SNIFF_BYTES,
    modality_by_extension,
    sniffed_modality,
    unsupported_type,
)
from tasks.records import Item, Modality
from tasks.service_errors import (
    BAD_REQUEST_CODES,
    NOT_FOUND_CODES,
    UNREADABLE_OBJECT_CODES,
    error_code,
    http_status,
)

MAX_KEY_BYTES = 1024
"""S3's limit on the length of an object key, in UTF-8 bytes."""


@dataclass(frozen=True)
class S3Prefix:
    """An S3 corpus root: a bucket and a key prefix that is "" or ends in "/"."""

    bucket: str
    prefix: str

    @classmethod
    def of(cls, uri: str) -> S3Prefix:
        """The prefix ``s3://bucket[/prefix]`` names, read as a directory (``docs`` covers
        ``docs/a.pdf``, not ``docs-old/a.pdf``); ``ValueError`` if ``uri`` names no bucket."""
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if uri[:5].lower() != "s3://" or not bucket:
            raise ValueError(f"not an S3 prefix: {uri!r} (expected s3://bucket/prefix)")
        prefix = prefix.strip("/")
        return cls(bucket=bucket, prefix=f"{prefix}/" if prefix else "")

    @property
    def uri(self) -> str:
        """``s3://bucket/prefix/``."""
        return f"s3://{self.bucket}/{self.prefix}"


@dataclass(frozen=True)
class S3Object:
    """Where a row's S3 URI leads, and the id the row gets when it gives none: the key
    relative to the root prefix (the whole key when the root is not on S3)."""

    bucket: str
    key: str
    derived_id: str

    @property
    def uri(self) -> str:
        """``s3://bucket/key``."""
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class ListedObject(ManifestRow):
    """A crawled S3 object with the ETag and size its listing reported, so resolving it needs
    no HEAD request. Otherwise an ordinary :class:`ManifestRow`."""

    etag: str = ""
    size_bytes: int = 0


def s3_object(uri: str, root: S3Prefix | None) -> S3Object | Rejection:
    """The object ``uri`` (``s3://bucket/key``) names, or why it cannot be one of the corpus:
    ``malformed_row`` (no bucket or key, or a prefix), ``outside_root`` (not under ``root``)."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key or key.endswith("/"):
        return Rejection("malformed_row", f"{uri!r} names no S3 object (expected s3://bucket/key)")
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return Rejection("malformed_row", f"S3 keys are at most {MAX_KEY_BYTES} bytes: {uri!r}")
    if root is None:
        return S3Object(bucket, key, key)
    if bucket != root.bucket or not key.startswith(root.prefix):
        return Rejection("outside_root", f"{uri} is outside the corpus root {root.uri}")
    return S3Object(bucket, key, key[len(root.prefix) :])


def s3_object_under(relative_path: str, root: S3Prefix) -> S3Object | Rejection:
    """The object a path relative to an S3 root names, or ``outside_root`` when the path is
    absolute (a local file, with the root on S3) or climbs out of the root with "..".
    """
    if relative_path.startswith("/"):
        return Rejection(
            "outside_root",
            f"{relative_path!r} is a local path, but the corpus root is {root.uri}",
        )
    key = posixpath.normpath(posixpath.join(root.prefix, relative_path))
    if not key.startswith(root.prefix) or key.startswith("../") or key == "..":
        return Rejection(
            "outside_root", f"{relative_path!r} climbs out of the corpus root {root.uri}"
        )
    return S3Object(root.bucket, key, key[len(root.prefix) :])


def s3_item(
    obj: S3Object,
    client: BaseClient,
    item_id: str,
    declared: Modality | None,
    metadata_json: str,
    encoding: str | None,
    listed: ListedObject | None = None,
    position: int = 0,
) -> Item | Rejection:
    """The object as an Item (``fingerprint`` ``etag:<ETag>:<size>``), or why not:
    ``not_found`` (no such object or bucket), ``unreadable`` (HTTP 403), ``empty_file``,
    ``unsupported_type``. Uses what ``listed`` reports instead of a HEAD request; reads the
    first ``SNIFF_BYTES`` bytes only when neither a declared modality nor the extension says
    what the object is; ``position`` is the manifest row it comes from. Other S3 errors
    (throttling, outages) are raised: they say nothing about the item, and botocore has
    already retried them."""
    if listed is not None:
        etag, size = listed.etag, listed.size_bytes
    else:
        try:
            head = client.head_object(Bucket=obj.bucket, Key=obj.key)
        except ClientError as error:
            return _access_rejection(error, obj, client)
        except ParamValidationError as error:  # botocore refused it before sending
            return Rejection("malformed_row", f"{obj.uri!r} is not a valid S3 location: {error}")
        etag, size = head["ETag"], head["ContentLength"]
    if size == 0:
        return Rejection("empty_file", f"{obj.uri} is empty (0 bytes)")
    modality = declared or modality_by_extension(obj.key)
    if modality is None:
        try:
            response = client.get_object(
                Bucket=obj.bucket, Key=obj.key, Range=f"bytes=0-{SNIFF_BYTES - 1}"
            )
            first_bytes = response["Body"].read()
        except ClientError as error:
            return _access_rejection(error, obj, client)
        modality = sniffed_modality(first_bytes)
        if modality is None:
            return unsupported_type(obj.uri)
    unquoted_etag = etag.strip('"')
    return Item(
        item_id=item_id,
        uri=obj.uri,
        modality=modality,
        fingerprint=f"etag:{unquoted_etag}:{size}",
        size_bytes=size,
        metadata_json=metadata_json,
        encoding=encoding,
        position=position,
    )


def crawled_s3_rows(root: S3Prefix, client: BaseClient) -> Iterator[ListedObject]:
    """Every object under ``root`` in key order, one listing page (≤1,000 keys) at a time,
    skipping folder markers (keys ending in "/") and hidden keys (a path part after the prefix
    starting with "."). ``position`` counts the objects yielded, from 1."""
    position = 0
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=root.bucket, Prefix=root.prefix):
        for listed in page.get("Contents", []):
            key: str = listed["Key"]
            if not crawls_key(root, key):
                continue
            position += 1
            yield ListedObject(
                position=position,
                uri=f"s3://{root.bucket}/{key}",
                etag=listed["ETag"],
                size_bytes=listed["Size"],
            )


def crawls_key(root: S3Prefix, key: str) -> bool:
    """Whether a crawl of ``root`` takes the object ``key`` (in ``root.bucket``) into the corpus:
    it lies under the prefix, is not a folder marker (a key ending in "/") and is not hidden (no
    path part after the prefix starts with "."). Anything else that lists a bucket (an S3
    Inventory report) applies the same rule, so it yields the items a crawl would."""
    if not key.startswith(root.prefix) or key.endswith("/"):
        return False
    relative = key[len(root.prefix) :]
    return bool(relative) and not any(part.startswith(".") for part in relative.split("/"))


def _access_rejection(error: ClientError, obj: S3Object, client: BaseClient) -> Rejection:
    code, status = _error_code_and_status(error)
    if code in NOT_FOUND_CODES or status == 404:
        if code == "NoSuchBucket" or not _bucket_exists(client, obj.bucket):
            return Rejection("not_found", f"no S3 bucket {obj.bucket!r} (for {obj.uri})")
        return Rejection("not_found", f"no S3 object at {obj.uri}")
    if code in BAD_REQUEST_CODES:
        return Rejection("malformed_row", f"S3 refused {obj.uri!r}: {code}")
    if code in UNREADABLE_OBJECT_CODES or status == 403:
        return Rejection(
            "unreadable",
            f"access denied reading {obj.uri} ({code or status}): "
            "the credentials in use may not read it",
        )
    raise error


def _error_code_and_status(error: ClientError) -> tuple[str, int | None]:
    return error_code(error), http_status(error) or None


def _bucket_exists(client: BaseClient, bucket: str) -> bool:
    """Whether ``bucket`` exists; True when that cannot be told (HEAD has no body to say
    which was missing, so a 404 is asked again of the bucket, but only for a clearer message)."""
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as error:
        code, status = _error_code_and_status(error)
        return not (code in NOT_FOUND_CODES or status == 404)
    return True
