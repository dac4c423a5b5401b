"""When a source row's file was last modified: a local file's mtime (``os.stat``, through
symlinks) or an S3 object's ``LastModified`` (a HEAD request). Asked only when a backfill
selects by date."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

from botocore.client import BaseClient
from botocore.exceptions import ClientError, ParamValidationError

from tasks.corpus.manifest import ManifestRow
from tasks.service_errors import (
    BAD_REQUEST_CODES,
    NOT_FOUND_CODES,
    UNREADABLE_OBJECT_CODES,
    error_code,
    http_status,
)

S3ClientFactory = Callable[[], BaseClient]


def modified_time(row: ManifestRow, root: str, s3: S3ClientFactory) -> datetime | None:
    """When the file ``row`` names was last modified (aware, UTC), or None when that cannot be
    read (no such file or object, no permission, an unsupported URI): such a row is the
    partition run's to reject, with the reason. Other S3 errors (throttling, outages) are
    raised, as the corpus reader raises them: they say nothing about the row.

    ``root`` is the corpus root that relative paths are read from: a directory or an
    ``s3://bucket/prefix``."""
    uri = row.uri
    if uri[:5].lower() == "s3://":
        return _s3_modified(uri, s3)
    if uri.startswith("file://"):
        uri = unquote(urlsplit(uri).path)
    elif "://" in uri:
        return None
    if root[:5].lower() == "s3://" and not os.path.isabs(uri):
        return _s3_modified(f"{root.rstrip('/')}/{uri}", s3)
    path = uri if os.path.isabs(uri) else os.path.join(root, uri)
    try:
        return datetime.fromtimestamp(os.stat(path).st_mtime, UTC)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None


def _s3_modified(uri: str, s3: S3ClientFactory) -> datetime | None:
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or not key:
        return None
    try:
        head = s3().head_object(Bucket=bucket, Key=key)
    except ParamValidationError:
        return None
    except ClientError as error:
        code, status = error_code(error), http_status(error)
        if code in NOT_FOUND_CODES | UNREADABLE_OBJECT_CODES | BAD_REQUEST_CODES:
            return None
        if status in (403, 404):
            return None
        raise
    modified: datetime = head["LastModified"]
    return modified.astimezone(UTC)


def in_range(moment: datetime | None, after: datetime | None, before: datetime | None) -> bool:
    """Whether ``moment`` is at or after ``after`` and before ``before`` (either may be None);
    an unknown ``moment`` is in any range, so the row is kept and its run says what is wrong."""
    if moment is None:
        return True
    if after is not None and moment < after:
        return False
    return before is None or moment < before
