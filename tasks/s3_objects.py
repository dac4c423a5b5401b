"""S3 objects as novaflow's stages use them: URIs, buckets made sure of, objects read whole or
line by line, and errors a person can act on.

Every call goes through the boto3 S3 client it is given (see :mod:`tasks.aws_clients`), so the
same code serves AWS and the local stand-in.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tasks.service_errors import (
    FORBIDDEN_CODES,
    MISSING_BUCKET_CODES,
    MISSING_KEY_CODES,
    error_code,
)

ASYNC_BUCKETS_HINT = "NOVAFLOW_ASYNC_JOBS__STAGING_URI / NOVAFLOW_ASYNC_JOBS__OUTPUT_URI"
# Enough lines of a 3072-dimension embedding per read that a line takes few reads to assemble.
_LINE_CHUNK_BYTES = 64 * 2**10


class S3ObjectError(RuntimeError):
    """An S3 problem a person has to act on: ``code`` is stable, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ObjectMissingError(S3ObjectError):
    """A read found no object under the key (``code`` ``"object_missing"``)."""

    def __init__(self, uri: str) -> None:
        super().__init__("object_missing", f"no S3 object at {uri}")
        self.uri = uri


def split_s3_uri(uri: str) -> tuple[str, str]:
    """The bucket and key (or prefix, possibly "") of ``s3://bucket/key``, the key without a
    leading slash; ``ValueError`` if ``uri`` is not an ``s3://`` URI naming a bucket."""
    bucket, _, key = uri[len("s3://") :].partition("/")
    if uri[:5].lower() != "s3://" or not bucket:
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    return bucket, key.lstrip("/")


def joined_s3_uri(base: str, *parts: str) -> str:
    """``base`` followed by ``parts``, one "/" between each (empty parts are left out)."""
    pieces = [piece for part in parts if (piece := part.strip("/"))]
    return base.rstrip("/") + "/" + "/".join(pieces)


def _forbidden(uri: str, action: str) -> S3ObjectError:
    return S3ObjectError(
        "object_forbidden",
        f"access denied {action} {uri} (403): the credentials in use need s3:GetObject on it "
        "(and s3:ListBucket on its bucket, without which S3 answers 403 for a missing key)",
    )


def ensured_bucket(
    s3: BaseClient, uri: str, create: bool, settings_hint: str = ASYNC_BUCKETS_HINT
) -> bool:
    """Make sure the bucket of ``uri`` exists; True when it had to be created.

    A missing bucket is created when ``create`` is set (in the client's Region), and is an
    :class:`S3ObjectError` ``bucket_missing`` otherwise; a bucket the credentials may not use
    is ``bucket_forbidden``. Messages name ``settings_hint``, the settings that chose ``uri``.
    """
    bucket, _ = split_s3_uri(uri)
    try:
        s3.head_bucket(Bucket=bucket)
        return False
    except ClientError as error:
        if error_code(error) in FORBIDDEN_CODES:
            raise S3ObjectError(
                "bucket_forbidden",
                f"access denied to S3 bucket {bucket!r} (for {uri}) (403): it may belong to "
                f"another account, or the credentials in use lack s3:ListBucket on it; grant "
                f"access or set {settings_hint} to a bucket you own",
            ) from error
        if error_code(error) not in MISSING_KEY_CODES | MISSING_BUCKET_CODES:
            raise
    if not create:
        raise S3ObjectError(
            "bucket_missing",
            f"S3 bucket {bucket!r} (for {uri}) does not exist: create it, or set "
            f"{settings_hint} to a bucket that does",
        )
    region = s3.meta.region_name
    arguments: dict[str, object] = {"Bucket": bucket}
    # us-east-1 is the one Region that rejects an explicit LocationConstraint.
    if region and region != "us-east-1":
        arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**arguments)
    except ClientError as error:
        if error_code(error) == "BucketAlreadyOwnedByYou":
            return False  # created by a concurrent run between our HEAD and CREATE
        if error_code(error) == "BucketAlreadyExists":
            raise S3ObjectError(
                "bucket_forbidden",
                f"S3 bucket name {bucket!r} (for {uri}) is taken by another account: "
                f"set {settings_hint} to a bucket of yours",
            ) from error
        raise
    return True


def _get_object(s3: BaseClient, uri: str) -> dict[str, Any]:
    """GetObject on ``uri``, its refusals turned into :class:`S3ObjectError`s one can act on."""
    bucket, key = split_s3_uri(uri)
    try:
        return s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        code = error_code(error)
        if code in MISSING_KEY_CODES:
            raise ObjectMissingError(uri) from error
        if code in MISSING_BUCKET_CODES:
            raise S3ObjectError(
                "bucket_missing", f"S3 bucket {bucket!r} (for {uri}) does not exist"
            ) from error
        if code in FORBIDDEN_CODES:
            raise _forbidden(uri, "reading") from error
        raise


def read_object(s3: BaseClient, uri: str, max_bytes: int = 64 * 2**20) -> bytes:
    """The whole content of the object at ``uri``: :class:`ObjectMissingError` when there is
    none, :class:`S3ObjectError` ``object_too_large`` when it is over ``max_bytes``."""
    response = _get_object(s3, uri)
    body = response["Body"]
    try:
        if response["ContentLength"] > max_bytes:
            raise S3ObjectError(
                "object_too_large",
                f"{uri} holds {response['ContentLength']} bytes, more than the {max_bytes} "
                "this read allows; read it as lines instead, or raise the limit",
            )
        return body.read()
    finally:
        body.close()


def object_lines(s3: BaseClient, uri: str) -> Iterator[bytes]:
    """The lines of the object at ``uri`` (JSONL), streamed, without their line endings; blank
    lines are kept so positions match the object's line numbers. :class:`ObjectMissingError`
    (on the first ``next()``) when there is no such object."""
    response = _get_object(s3, uri)
    body = response["Body"]
    try:
        yield from body.iter_lines(chunk_size=_LINE_CHUNK_BYTES)
    finally:
        body.close()


def first_existing(s3: BaseClient, uris: Iterable[str]) -> str | None:
    """The first of ``uris`` that names an existing object, or None when none does.

    Used where the documented output file names have variants. A 403 counts as absent while
    another candidate may still be found (S3 answers 403 for a missing key to credentials
    without s3:ListBucket); when none is found, it is an :class:`S3ObjectError`
    ``object_forbidden``, since "none exist" could not be told.
    """
    forbidden: str | None = None
    for uri in uris:
        bucket, key = split_s3_uri(uri)
        try:
            s3.head_object(Bucket=bucket, Key=key)
            return uri
        except ClientError as error:
            if error_code(error) in FORBIDDEN_CODES:
                forbidden = forbidden or uri
            elif error_code(error) not in MISSING_KEY_CODES | MISSING_BUCKET_CODES:
                raise
    if forbidden is not None:
        raise _forbidden(forbidden, "looking for")
    return None
