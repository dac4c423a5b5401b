"""Where a run lease is kept, and the compare-and-swap each kind of store offers for it: a local
file under an ``flock`` (compared by content digest), or an S3 object changed only by conditional
requests (``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace or delete)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from tasks.aws_clients import s3_client
from tasks.service_errors import CONDITIONAL_WRITE_LOST_CODES, MISSING_KEY_CODES, error_code

Stored = tuple[bytes, str]
"""A lease's content and its version (digest or ETag)."""


class LeaseSlot(Protocol):
    """A place one lease record is kept, changed only by compare-and-swap."""

    def read(self) -> Stored | None: ...
    def create(self, data: bytes) -> str | None: ...
    def replace(self, data: bytes, version: str) -> str | None: ...
    def delete(self, version: str) -> bool: ...


class LocalLeaseSlot:
    """A lease file in a local directory; every access under an flock on a sidecar file."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)
        # Never deleted: removing a lock file that others may hold open would split the lock.
        self._guard = self._path.with_name(self._path.name + ".lock")

    @contextmanager
    def _locked(self, exclusive: bool) -> Iterator[Stored | None]:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self._guard, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                data = self._path.read_bytes()
            except FileNotFoundError:
                yield None
            else:
                yield data, _digest(data)
        finally:
            os.close(descriptor)  # closing releases the flock

    def read(self) -> Stored | None:
        if not self._path.parent.is_dir():
            return None  # and no run folder made just to look
        with self._locked(exclusive=False) as stored:
            return stored

    def create(self, data: bytes) -> str | None:
        with self._locked(exclusive=True):
            try:
                descriptor = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            return _digest(data)

    def replace(self, data: bytes, version: str) -> str | None:
        with self._locked(exclusive=True) as stored:
            if stored is None or stored[1] != version:
                return None
            temporary = self._path.with_name(f".tmp-{uuid.uuid4().hex}-{self._path.name}")
            temporary.write_bytes(data)
            os.replace(temporary, self._path)
            return _digest(data)

    def delete(self, version: str) -> bool:
        with self._locked(exclusive=True) as stored:
            if stored is None or stored[1] != version:
                return False
            self._path.unlink()
            return True


class S3LeaseSlot:
    """A lease object on S3, changed only by conditional requests (its ETag is the version)."""

    def __init__(self, bucket: str, key: str, client: BaseClient) -> None:
        self._object = {"Bucket": bucket, "Key": key}
        self._client = client

    def read(self) -> Stored | None:
        try:
            answer = self._client.get_object(**self._object)
        except ClientError as err:
            if error_code(err) in MISSING_KEY_CODES:
                return None
            raise
        return answer["Body"].read(), str(answer["ETag"])

    def create(self, data: bytes) -> str | None:
        return self._put(data, IfNoneMatch="*")

    def replace(self, data: bytes, version: str) -> str | None:
        return self._put(data, IfMatch=version)

    def delete(self, version: str) -> bool:
        try:
            self._client.delete_object(**self._object, IfMatch=version)
        except ClientError as err:
            _raise_unless_lost_race(err)
            return False
        return True

    def _put(self, data: bytes, **condition: str) -> str | None:
        try:
            answer = self._client.put_object(**self._object, Body=data, **condition)
        except ClientError as err:
            _raise_unless_lost_race(err)
            return None
        return str(answer["ETag"])


def _raise_unless_lost_race(err: ClientError) -> None:
    # A refused condition means another writer changed the object first; anything else is not
    # a lost race and goes up.
    if error_code(err) not in CONDITIONAL_WRITE_LOST_CODES:
        raise err


def lease_slot_at(location: str, s3: BaseClient | None) -> LeaseSlot:
    """The slot for a lease at ``location``: a local path or ``s3://bucket/key``."""
    if location.startswith("s3://"):
        bucket, _, key = location.removeprefix("s3://").partition("/")
        if not bucket or not key:
            raise ValueError(f"not an s3://bucket/key location: {location!r}")
        return S3LeaseSlot(bucket, key, s3 if s3 is not None else s3_client())
    if "://" in location:
        raise ValueError(f"a lease lives in a local directory or on S3, not at {location!r}")
    return LocalLeaseSlot(location)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
