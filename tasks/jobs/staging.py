"""Staging an async job's input in S3: a local corpus file uploaded once, content-addressed.

Bedrock's async jobs read their inputs from S3, so a local corpus file is first uploaded to a
staging prefix; S3 inputs are used in place. Reading the jobs' outputs back uses
:mod:`tasks.s3_objects`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tasks.s3_objects import S3ObjectError, joined_s3_uri, split_s3_uri
from tasks.service_errors import FORBIDDEN_CODES, MISSING_KEY_CODES, error_code

_MIN_PART_BYTES = 8 * 2**20


def staged_input(
    s3: BaseClient,
    uri: str,
    local_path: Path,
    fingerprint: str,
    staging_uri: str,
    multipart_threshold_bytes: int = 64 * 2**20,
) -> str:
    """The S3 URI an async job reads ``uri``'s bytes from.

    An ``s3://`` ``uri`` is used in place. A local file (at ``local_path``) is uploaded once to
    ``<staging_uri>/<first 32 hex of sha256(fingerprint)>/<file name>``; an object already there
    with the file's size is taken as that upload, so re-runs and resumed runs never upload twice.
    A missing file is an :class:`S3ObjectError` ``input_missing``; an upload that fails after
    the library's retries is ``upload_failed``.
    """
    if uri.startswith("s3://"):
        return uri
    if not local_path.is_file():
        raise S3ObjectError(
            "input_missing",
            f"cannot stage {uri} for an async job: no file at {local_path} "
            "(was it moved or deleted since the run was planned?)",
        )
    size = local_path.stat().st_size
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:32]
    target = joined_s3_uri(staging_uri, digest, local_path.name)
    bucket, key = split_s3_uri(target)
    try:
        if s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == size:
            return target
    except ClientError as error:
        # A writer without s3:ListBucket gets 403 for a missing key: upload and let S3 decide.
        if error_code(error) not in MISSING_KEY_CODES | FORBIDDEN_CODES:
            raise
    transfer = TransferConfig(
        multipart_threshold=multipart_threshold_bytes,
        multipart_chunksize=max(multipart_threshold_bytes, _MIN_PART_BYTES),
        max_concurrency=4,
    )
    try:
        s3.upload_file(str(local_path), bucket, key, Config=transfer)
    except S3UploadFailedError as error:
        raise S3ObjectError(
            "upload_failed",
            f"could not upload {local_path} to {target}: {error}; check that the credentials "
            f"may s3:PutObject there, or set NOVAFLOW_ASYNC_JOBS__STAGING_URI elsewhere",
        ) from error
    return target
